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
    # Post-ReLU means the notebook printed after LSUV (its std-only run), layer by layer.
    "std_variant_means": [0.320, 0.410, 0.636, 0.718],
    "mean_std_variant_means": [0.281, 0.270, 0.300, 0.451],
}

PAPER = "Dmytro Mishkin and Jiri Matas, \"All you need is a good init\", ICLR 2016, arXiv:1511.06422"
