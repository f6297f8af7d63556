"""The benchmark's plots are drawn from a bench.json record: every model, out-of-memory
points, GPU rows when present, nothing when there is nothing to plot."""

import matplotlib

matplotlib.use("Agg")

from matplotlib import image  # noqa: E402

from speechbrain_s4m.benchmark.plots import plot_scaling, plot_speed, write_plots  # noqa: E402

SCALING = {
    "S4M-tiny": [
        {"seconds": 1, "time_s": 0.2, "peak_mib": 50.0},
        {"seconds": 4, "time_s": 0.9, "peak_mib": 190.0},
        {"seconds": 60, "time_s": 15.0, "peak_mib": 2900.0},
        {"seconds": 600, "time_s": 130.0, "peak_mib": 900.0, "long_audio": True},
    ],
    "Sepformer": [
        {"seconds": 1, "time_s": 1.5, "peak_mib": 400.0},
        {"seconds": 4, "time_s": 7.0, "peak_mib": 3000.0},
        {"seconds": 60, "error": "out of memory (over the 15.9 GiB limit)"},
    ],
}
MODELS = {
    "S4M-tiny": {"cpu": {"rtf": 0.2}, "gpu": {"forward_ms": 10.0, "backward_ms": 40.0}},
    "S4M": {"cpu": {"rtf": 0.5}},
    "Sepformer": {"cpu": {"rtf": 1.6}, "gpu": {"forward_ms": 30.0, "backward_ms": 90.0}},
}


def not_blank(path):
    pixels = image.imread(path)
    return pixels.shape[0] > 200 and pixels[..., :3].std() > 0.05


def test_write_plots_draws_both_figures(tmp_path):
    written = write_plots({"scaling": SCALING, "models": MODELS}, str(tmp_path / "bench"))
    assert [p.rsplit("/", 1)[-1] for p in written] == ["scaling.png", "speed.png"]
    assert all(not_blank(path) for path in written)


def test_nothing_to_plot_writes_nothing(tmp_path):
    assert plot_scaling({"S4M-tiny": [{"seconds": 60, "error": "timed out"}]}, str(tmp_path / "s.png")) is None
    assert plot_speed({"S4M-tiny": {"cpu": {"rtf": 0.2}}}, str(tmp_path / "speed.png")) is None  # no Sepformer
    assert write_plots({"scaling": {}, "models": {}}, str(tmp_path)) == []
    assert list(tmp_path.iterdir()) == []
