"""Hand-made per-epoch history rows, shared by the stats and results tests."""


def rows(accs, phase="eval", losses=None):
    """One train row and one ``phase`` row per epoch, with the given accuracies (and losses)."""
    out = []
    for e, a in enumerate(accs):
        out.append(dict(epoch=e, phase="train", loss=9.0, accuracy=0.0, seconds=0.1))
        out.append(dict(epoch=e, phase=phase, loss=(losses or accs)[e], accuracy=a, seconds=0.1))
    return out
