from setuptools import find_packages, setup

setup(
    name="LibMTL_rgb",
    version="0.1.0",
    description="LibMTL-style multi-task learning with Rotation-Based Gradient Balancing (RGB)",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    # the core, and apart from it what only the examples use: both folders at the top level, found
    # from the root (package_dir {"": "."}), so `pip install -e .` is a plain path entry (no import-hook
    # finder, which a folder named LibMTL_rgb in the working directory would shadow)
    packages=find_packages(include=["LibMTL_rgb", "LibMTL_rgb.*", "LibMTL_rgb_examples", "LibMTL_rgb_examples.*"]),
    package_dir={"": "."},
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.2",
        "torchvision>=0.17",
        "numpy>=1.24",
        "scipy>=1.10",
        "tqdm>=4.60",
        "matplotlib>=3.7",
        "torchjd[full]>=0.18,<0.19",
    ],
    extras_require={
        # QM9 offline from PyPI: examples/qm9/from_qm9pack.py (qm9pack's CSV, rdkit's bonds)
        "qm9": ["torch-geometric>=2.4", "qm9pack>=1.0.3", "rdkit>=2023.9"],
        "benchmark": ["tensorboard>=2.12", "scikit-learn>=1.3", "submitit>=1.5"],
        "test": ["pytest>=7"],
    },
    license="MIT",
)
