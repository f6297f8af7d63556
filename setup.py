"""Installation script for speechbrain-s4m."""

from setuptools import find_packages, setup

ONNX = ["onnx>=1.17", "onnxruntime>=1.20", "onnxscript>=0.2"]

setup(
    name="speechbrain-s4m",
    version="0.2.0",
    description=("S4M: efficient speech separation with neural state-space models, as a SpeechBrain plugin"),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.9",
    packages=find_packages(include=["speechbrain_s4m", "speechbrain_s4m.*"]),
    # Ranges, so that the plugin installs into an environment that already holds a
    # tested torch and SpeechBrain without replacing them; constraints.txt pins the
    # exact set that the Quick start and CI install and test.
    install_requires=[
        # The oldest (and only) torch / torchaudio pair tested. PyPI's torchaudio
        # wheels link against the CUDA build of torch: install them as a matched pair
        # (DESIGN.md, section 6).
        "torch>=2.11",
        "torchaudio>=2.11",
        "speechbrain>=1.1.2,<1.2",  # the versions tested (speechbrain_compat.CHECKED_VERSIONS)
        "hyperpyyaml>=1.2",
        "soundfile>=0.12",
        "numpy",
        "scipy",
        "fast_bss_eval>=0.1.4",
        "tqdm",
        "matplotlib",
        "thop",  # MAC counting in s4m-bench (the paper's tool)
        # espeak-ng library + data, for the synthetic dataset (speechbrain_s4m.data.synthetic)
        "espeakng-loader>=0.2.4,<0.3",
    ],
    extras_require={
        # s4m-export-onnx (torch.onnx's exporter needs onnx and onnxscript) and
        # speechbrain_s4m.inference.onnx_runtime (numpy and onnxruntime only)
        "onnx": ONNX,
        "test": ["pytest>=7", "mir_eval>=0.7", "ruff>=0.6", *ONNX],
    },
    entry_points={
        "console_scripts": [
            "s4m-export=speechbrain_s4m.export.speechbrain_folder:main",
            "s4m-export-onnx=speechbrain_s4m.export.onnx_graphs:main",
            "s4m-compile=speechbrain_s4m.export.compiled_packages:main",
            "s4m-separate=speechbrain_s4m.inference.separate_command:main",
            "s4m-make-librimix=speechbrain_s4m.data.librispeech_mixtures:main",
            "s4m-make-data=speechbrain_s4m.data.synthetic:main",
            "s4m-bench=speechbrain_s4m.benchmark.cli:main",
            "s4m-plot-curves=speechbrain_s4m.training.curves:main",
        ],
    },
)
