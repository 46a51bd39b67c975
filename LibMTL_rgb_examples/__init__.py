"""``LibMTL_rgb_examples``: what only the examples use, apart from the core library.

Installed with LibMTL_rgb as its own top-level package, apart from the core ``LibMTL_rgb``
(no ``package_dir`` mapping, so ``pip install -e .`` is a plain path entry that works from any
folder): the shared command-line flags and run dispatch (``example_runner``),
the dense-prediction readers, augmentation and metrics (``dense_data``, ``dense_augment``,
``dense_metrics``), reading input files with errors that name the file (``input_files``),
one-line exits (``run_errors``), and the outputs of many-task examples (``many_task_output``,
``task_columns``).
"""
