"""What the two seed documents report, quoted so the book can set its own numbers beside them.

These are the sources' single-run figures, never ours: the book labels them as such.
"""

BLOG = {
    "citation": "Alex Kelly, \"The importantance of propper initializtaion\" [title as published], blog post written while following fast.ai course 2022 part 2",
    "dataset": "svhn",
    # Final-epoch eval accuracy after 3 epochs, one run each.
    "eval_accuracy": {
        "baseline": 0.196,
        "input_normalisation": 0.196,
        "batchnorm_kaiming": 0.830,
        "lsuv_callback": 0.799,
    },
    # Side of the first conv's kernel per section (lsuvlib.get_model's first_kernel). The LR-finder,
    # baseline and input-normalisation sections built their stack by hand starting 5x5; the BatchNorm
    # and LSUV sections called a get_model that passed no kernel size, so every conv was 3x3.
    "first_kernel": {
        "lr_finder": 5,
        "baseline": 5,
        "input_normalisation": 5,
        "batchnorm_kaiming": 3,
        "lsuv_callback": 3,
    },
    # The post's LR finder: the course's LRFinderCB with its defaults, in a plain-SGD Learner created
    # with lr=1e-7, fitted for one epoch, on the baseline CNN and unnormalised inputs, batches of 1024.
    # Growth is per batch; the loss curve is the raw per-batch training loss; the sweep stops after
    # recording a loss above 3x the lowest so far (the course's later version also stops on NaN);
    # no rate is suggested (the post reads its plot) and the trained model is not restored.
    "lr_finder": {
        "start": 1e-7,
        "growth": 1.3,
        "stop_factor": 3.0,
        "smoothing": None,
        "max_epochs": 1,
        "momentum": 0.0,
        "batch_size": 1024,
    },
    # The momentum learner (the course's MomentumLearner, default mom=0.85): gradients are scaled by
    # 0.85 instead of zeroed, i.e. SGD with momentum 0.85 and no dampening.
    "momentum": 0.85,
}

NOTEBOOK = {
    "citation": "\"Layerwise Sequential Unit Variance (LSUV)\" notebook, after fastai course-v3 lesson 07a",
    "dataset": "mnist",
    # Approximate test accuracy (%) after epochs 1 and 3, as the notebook's table gives them.
    "test_accuracy_pct": {
        "none": {1: 84, 3: 92},
        "std": {1: 89, 3: 95},
        "mean_std": {1: 91, 3: 95},
        "loop": {1: 93, 3: 95},
    },
    # Its two conclusions as claims on the per-seed differences a - b: after epoch 1 the variants are
    # ordered (loop > mean_std > std > none); after epoch 3 the three LSUV variants are level, and all
    # above none. (kind, a, b, epoch), epoch 1-based.
    "claims": [("order", "loop", "mean_std", 1), ("order", "mean_std", "std", 1), ("order", "std", "none", 1),
               ("order", "loop", "std", 1), ("order", "loop", "none", 1), ("order", "mean_std", "none", 1),
               ("tie", "loop", "mean_std", 3), ("tie", "loop", "std", 3), ("tie", "mean_std", "std", 3),
               ("order", "std", "none", 3), ("order", "mean_std", "none", 3), ("order", "loop", "none", 3)],
    # Post-ReLU means the notebook printed after LSUV (its std-only run), layer by layer.
    "std_variant_means": [0.320, 0.410, 0.636, 0.718],
    "mean_std_variant_means": [0.281, 0.270, 0.300, 0.451],
    # ... and after its type 3 (mean then std in a loop).
    "loop_variant_means": [0.000399, 0.0000523, 0.000179, -0.000650],
}
