"""The benchmark suite's plumbing: percentiles, steady rates, pipeline_ratio, result files, tables, targets,
and the scripts end to end at a tiny size into a temporary folder. No timing is ever asserted."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

from benchlib import results, stats, summary, tables  # noqa: E402
from benchlib.data import cycled_batches, specimen_name, stamp  # noqa: E402
from benchlib.timing import Budget, time_calls  # noqa: E402


def test_summarize_gives_interpolated_percentiles() -> None:
    out = stats.summarize(list(range(1, 101)))
    assert out["n"] == 100 and out["min"] == 1 and out["max"] == 100
    assert out["p50"] == pytest.approx(50.5) and out["p95"] == pytest.approx(95.05)
    assert out["p99"] == pytest.approx(99.01) and out["mean"] == pytest.approx(50.5)
    assert stats.summarize([])["n"] == 0 and math.isnan(stats.summarize([])["p50"])


def test_steady_rate_leaves_out_warm_up_and_drain() -> None:
    # 2 slow starters, then one completion every 0.1 s, then a long drain: the steady part is 10/s
    times = [0.0, 5.0] + [5.0 + 0.1 * i for i in range(1, 97)] + [30.0, 40.0]
    steady = stats.steady_rate(times, trim=0.1)
    assert steady["rate"] == pytest.approx(10.0)
    assert math.isnan(stats.steady_rate([1.0, 2.0])["rate"])


def test_pipeline_ratio() -> None:
    assert stats.pipeline_ratio(9.0, 10.0) == pytest.approx(0.9)
    assert math.isnan(stats.pipeline_ratio(9.0, 0.0))
    assert math.isnan(stats.pipeline_ratio(float("nan"), 10.0))


def test_markdown_table_and_formatting() -> None:
    table = tables.markdown_table(["a", "b"], [["x|y", 1234.5]], right=[1])
    assert table.splitlines() == ["| a | b |", "| --- | ---: |", "| x\\|y | 1234.5 |"]
    assert tables.fmt(None) == "-" and tables.fmt(float("nan")) == "-" and tables.fmt(1234.56, 1) == "1,234.6"
    assert tables.verdict(14.0, 15.0, higher_is_better=False) == "met"
    assert tables.verdict(0.8, 0.9) == "not met" and tables.verdict(None, 0.9) == "not measured"


def test_budget_stops_on_samples_and_seconds() -> None:
    budget = Budget(warmup=0, min_iters=5, min_seconds=1.0, max_seconds=10.0, max_iters=100)
    assert not budget.done(4, 2.0) and not budget.done(5, 0.5) and budget.done(5, 1.0)
    assert budget.done(3, 10.0) and not budget.done(2, 10.0)  # a slow call still gets 3 samples
    assert budget.done(100, 0.0)
    calls: list[int] = []
    samples = time_calls(calls.append, Budget(warmup=2, min_iters=3, min_seconds=0.0, max_seconds=1.0))
    assert len(samples) == 3 and calls == [0, 1, 2, 3, 4]


def test_update_section_merges_sections_of_one_day(tmp_path: Path) -> None:
    results.update_section(tmp_path, "pipeline", {"pipeline_ratio": 0.95}, "## Pipeline\n\nratio 0.95\n")
    json_path, md_path = results.update_section(tmp_path, "backends", {"rows": [], "x": float("nan")},
                                                "## Backends\n\nnone\n")
    data = json.loads(json_path.read_text())
    assert json_path.name == f"{results.machine_name(with_gpu=True)}-{results.today()}.json"
    assert set(data["sections"]) == {"pipeline", "backends"}
    assert data["sections"]["pipeline"]["pipeline_ratio"] == 0.95 and data["sections"]["backends"]["x"] is None
    text = md_path.read_text()
    assert text.index("## Backends") < text.index("## Pipeline")  # fixed section order
    assert data["environment"]["python"] and "packages" in data["environment"]


def test_machine_names_are_file_safe() -> None:
    assert results.slug(" Intel(R) Xeon(R) CPU @ 2.20GHz") == "intel-xeon"
    assert results.slug("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"
    assert all(c.isalnum() or c == "-" for c in results.machine_name(with_gpu=True))


def test_stamped_copies_differ_in_content_only() -> None:
    image = np.full((8, 8), 7, dtype=np.uint8)
    a, b = stamp(image, 1), stamp(image, 2)
    assert a.shape == image.shape and a.dtype == image.dtype
    assert hashlib.sha256(a.tobytes()).digest() != hashlib.sha256(b.tobytes()).digest()
    assert [specimen_name(i) for i in (0, 3, 4)] == ["00001_p1", "00001_p4", "00002_p1"]


def test_cycled_batches_repeat_tiles_rather_than_pad() -> None:
    tiles = np.arange(3 * 2 * 2, dtype=np.float32).reshape(3, 1, 2, 2) + 1
    batches = cycled_batches(tiles, 5, count=2)
    assert all(b.shape == (5, 1, 2, 2) for b in batches) and all(b.min() > 0 for b in batches)


def _day(gpus: list[str], device: str, p50: float, ratio: float, fraction: float | None) -> dict:
    rows = [{"size": [1040, 1388], "dtype": "uint8", "normalization": "fixed", "output": "fp32",
             "fraction_of_copy": fraction}] if fraction is not None else []
    return {"machine": "m", "date": "2026-01-01", "environment": {"gpus": gpus}, "sections": {
        "pipeline": {"choice": {"device": device}, "label": "x", "batch": 32, "pipeline_ratio": ratio,
                     "modes": [{"name": "rate", "latency_ms": {"p50": p50}}]},
        "preprocess": {"rows": rows, "cuda": {"reason": "pycuda is not installed"}}}}


def test_targets_on_a_cpu_and_on_a_gpu() -> None:
    cpu = summary.targets(_day([], "cpu", 900.0, 0.95, None))
    assert [t["verdict"] for t in cpu] == ["met"]
    gpu = summary.targets(_day(["NVIDIA H100, 580"], "cuda", 16.0, 0.92, 0.75))
    assert [t["verdict"] for t in gpu] == ["not met", "met", "met"]
    missing = summary.targets(_day(["NVIDIA H100, 580"], "cuda", 12.0, float("nan"), None))
    assert [t["verdict"] for t in missing] == ["met", "not measured", "not measured"]
    assert "not measured" in summary.targets_markdown(missing)


@pytest.fixture
def models_dir(tiny_checkpoint: Path, tiny_onnx: Path, tmp_path: Path) -> Path:
    """A model folder as `--models` takes it: the tiny checkpoint and its fp32 ONNX (tile 64)."""
    folder = tmp_path / "models"
    folder.mkdir()
    shutil.copy(tiny_checkpoint, folder / "checkpoint.pt")
    shutil.copy(tiny_onnx, folder / "model.onnx")
    return folder


def _read_day(out: Path) -> dict:
    (path,) = [p for p in out.glob("*.json")]
    return json.loads(path.read_text())


@pytest.mark.slow
def test_bench_pipeline_end_to_end(models_dir: Path, tmp_path: Path) -> None:
    import bench_pipeline

    out = tmp_path / "results"
    code = bench_pipeline.main(["--models", str(models_dir), "--out", str(out), "--work", str(tmp_path / "work"),
                                "--size", "128x128", "--tile", "64", "--images", "6", "--pool-images", "2",
                                "--batch", "4", "--bare-seconds", "0.2", "--settle-ms", "0", "--warmup-images", "1",
                                "--rate", "20", "--backend", "onnxruntime"])
    assert code == 0
    section = _read_day(out)["sections"]["pipeline"]
    assert "pipeline_ratio" in section and section["choice"]["backend"] == "onnxruntime"
    assert [m["name"] for m in section["modes"]] == ["rate", "burst"]
    assert all(m["processed"] == 6 and m["latency_ms"]["n"] > 0 for m in section["modes"])
    assert (out / section["plot"]).is_file()
    assert "pipeline_ratio" in (out / f"{_read_day(out)['machine']}-{_read_day(out)['date']}.md").read_text()


@pytest.mark.slow
def test_bench_pipeline_whole_field(models_dir: Path, tmp_path: Path) -> None:
    import bench_pipeline

    out = tmp_path / "results"
    results.update_section(out, "pipeline", {"pipeline_ratio": 0.95}, "## Pipeline\n\ntile row\n")
    code = bench_pipeline.main(["--quick", "--models", str(models_dir), "--out", str(out),
                                "--work", str(tmp_path / "work"), "--size", "128x128", "--tile", "64",
                                "--images", "6", "--pool-images", "2", "--modes", "burst", "--bare-seconds", "0.2",
                                "--settle-ms", "0", "--backend", "onnxruntime", "--inference", "field"])
    assert code == 0
    day = _read_day(out)
    assert day["sections"]["pipeline"]["pipeline_ratio"] == 0.95  # the tile-mode section is kept
    section = day["sections"]["pipeline-field"]
    assert section["inference"] == "field" and section["field_fallback"] is None
    assert section["bare"]["inference"] == "field" and section["bare"]["before"]["inference"] == "field"
    assert isinstance(section["pipeline_ratio"], float) and math.isfinite(section["pipeline_ratio"])
    (burst,) = section["modes"]
    assert burst["processed"] == 6 and burst["inference"] == {"field": 6}
    text = (out / f"{day['machine']}-{day['date']}.md").read_text()
    assert "--inference field" in text and "one `infer_field` call per image" in text and "tile row" in text


def test_bench_pipeline_takes_every_registered_backend() -> None:
    import bench_pipeline

    from hep2edge.runtime.backends import BACKENDS

    for name in ("auto", *BACKENDS.names()):
        assert bench_pipeline.parse_args(["--backend", name]).backend == name
    args = bench_pipeline.parse_args(["--backend", "openvino", "--precision", "fp32", "--precision-hint", "f32"])
    assert args.inference == "tiles" and args.precision_hint == "f32" and "openvino" in BACKENDS.names()
    with pytest.raises(SystemExit):
        bench_pipeline.parse_args(["--inference", "whole"])


@pytest.mark.slow
def test_bench_backends_end_to_end(models_dir: Path, tmp_path: Path) -> None:
    import bench_backends

    out = tmp_path / "results"
    code = bench_backends.main(["--models", str(models_dir), "--out", str(out), "--work", str(tmp_path / "work"),
                                "--size", "128x128", "--tile", "64", "--pool-images", "1", "--batches", "1,4",
                                "--budget", "quick", "--backends", "onnxruntime,tensorrt", "--precisions",
                                "fp32,int8", "--devices", "cpu,cuda"])
    assert code == 0
    rows = _read_day(out)["sections"]["backends"]["rows"]
    measured = [r for r in rows if r["status"] == "ok"]
    assert [(r["precision"], r["batch"], r["inference"]) for r in measured] == [
        ("fp32", 1, "tiles"), ("fp32", 4, "tiles"), ("fp32", 4, "field")]  # a whole field = its 4 tiles' work
    assert all(r["latency_ms"]["n"] >= 3 and r["host_peak_mb"] for r in measured)
    skipped = {(r["backend"], r["device"], r["precision"]) for r in rows if r["status"] == "skipped"}
    assert ("onnxruntime", "cpu", "int8") in skipped  # no int8 file in the folder: said, not hidden
    speedup = _read_day(out)["sections"]["backends"]["cpu_speedup"]
    assert speedup["baseline"] == "onnxruntime fp32 tiles" and speedup["speedup"] >= 1.0  # the baseline is a candidate


def test_bench_openvino_layers_sums_each_kernel_of_a_whole_field_pass(models_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("openvino")
    import bench_openvino_layers

    out = tmp_path / "results"
    code = bench_openvino_layers.main(["--quick", "--models", str(models_dir), "--out", str(out), "--size",
                                       "100x130", "--precisions", "fp32,int8", "--repeats", "1"])
    assert code == 0
    section = _read_day(out)["sections"]["openvino-layers"]
    assert section["field"] == [128, 160]  # padded to multiples of 32
    fp32 = section["files"]["fp32"]
    assert fp32["file"] == "model.onnx" and fp32["wall_ms"] > 0
    assert any(row["layer"] == "Convolution" and row["count"] > 0 for row in fp32["rows"])
    assert [r["ms"] for r in fp32["rows"]] == sorted((r["ms"] for r in fp32["rows"]), reverse=True)
    assert "skipped" in section["files"]["int8"]  # the folder holds no int8 file: said, not invented
    assert "Convolution" in section["markdown"]


def test_bench_preprocess_records_why_cuda_was_not_measured(tmp_path: Path) -> None:
    import bench_preprocess
    from benchlib import devices

    code = bench_preprocess.main(["--quick", "--out", str(tmp_path), "--sizes", "64x96", "--tile", "32",
                                  "--dtypes", "uint8", "--normalizations", "fixed"])
    assert code == 0
    section = _read_day(tmp_path)["sections"]["preprocess"]
    assert [r["output"] for r in section["rows"]] == ["fp32", "fp16"]
    assert all(r["numpy_gb_s"] > 0 and r["tiles"] == 6 for r in section["rows"])
    if not devices.cuda_pycuda().ok:
        assert section["cuda"]["reason"] and "fraction_of_copy" not in section["rows"][0]


def test_bench_host_runs_the_product_stages_and_leaves_a_result_per_field(tmp_path: Path) -> None:
    import bench_host

    work = tmp_path / "work"
    code = bench_host.main(["--quick", "--out", str(tmp_path), "--work", str(work), "--size", "96x160",
                            "--tile", "64", "--images", "6", "--threads", "1,2"])
    assert code == 0
    section = _read_day(tmp_path)["sections"]["host"]
    assert [r["threads"] for r in section["runs"]] == [1, 2]
    assert all(r["reader_images_s"] > 0 and r["writer_images_s"] > 0 for r in section["runs"])
    assert set(section["runs"][0]["steps"]) == set(bench_host.STEPS)
    written = work / "host-write-2"
    assert len(list(written.glob("*_mask.png"))) == len(list(written.glob("*.json"))) == 6


def test_readme_table_from_the_latest_results(tmp_path: Path) -> None:
    row = {"backend": "onnxruntime", "device": "cpu", "precision": "fp32", "variant": "", "status": "ok",
           "latency_ms": {"p50": 5000.0}, "images_s": 0.2}
    data = {"machine": "cpu-box", "date": "2026-01-02", "sections": {
        "backends": {"tiles_per_image": 15, "rows": [{**row, "batch": 15}, {**row, "batch": 32}]},
        "pipeline": {"label": "onnxruntime cpu fp32", "batch": 32, "pipeline_ratio": 0.97,
                     "modes": [{"name": "rate", "latency_ms": {"p50": 5400.0}}]}}}
    (tmp_path / "cpu-box-2026-01-02.json").write_text(json.dumps(data))
    (tmp_path / "cpu-box-learning.json").write_text(json.dumps({"machine": "cpu-box"}))  # not a day file
    text = summary.readme_markdown(tmp_path)
    assert "| cpu-box (2026-01-02) | onnxruntime cpu fp32 | 5,000.0 | 0.20 (batch 32) |" in text
    assert "pipeline_ratio 0.97" in text
    assert "](results/cpu-box-2026-01-02.md)" in text  # links relative to benchmarks/README.md


def test_cli_bench_passes_through_and_says_when_the_suite_is_absent(monkeypatch: pytest.MonkeyPatch,
                                                                   capfd: pytest.CaptureFixture[str]) -> None:
    from typer.testing import CliRunner

    from hep2edge.cli import bench_command
    from hep2edge.cli.app import app

    help_run = CliRunner().invoke(app, ["bench", "--help"])  # run_all.py's own help, from a child process
    printed = capfd.readouterr().out
    assert help_run.exit_code == 0 and "--quick" in printed and "--only" in printed
    monkeypatch.setattr(bench_command, "run_all_script", lambda: None)
    missing = CliRunner().invoke(app, ["bench", "--quick"])
    assert missing.exit_code == 2 and "source checkout" in missing.output


def test_soak_figures_use_the_fed_samples_and_fit_the_second_half() -> None:
    from benchlib.soak import Sample, figures

    def run(kb_per_image: float) -> list[Sample]:
        fed = [Sample(t=float(i), processed=10 * i, rss_mb=300 + kb_per_image * 10 * i / 1024, hwm_mb=310.0,
                      cpu_s=0.5 * i, threads=14, fds=10) for i in range(101)]  # 10 images/s, 1000 images
        drain = [Sample(t=101.0 + i, processed=1000, rss_mb=200.0, hwm_mb=310.0, cpu_s=50.0, threads=3, fds=3,
                        feeding=False) for i in range(3)]  # shutdown: left out of the fit
        return fed + drain

    growing = figures(run(2.0), warmup_fraction=0.1, flat_kb=0.5)
    assert growing["slope_kb_per_image"] == pytest.approx(2.0) and growing["verdict"] == "grows"
    assert growing["warmup_images"] == 100 and growing["end_images"] == 1000
    assert growing["rss_mb"]["end"] == pytest.approx(300 + 2.0 * 1000 / 1024) and growing["rss_mb"]["peak"] == 310
    assert growing["images_s"]["second_half"] == pytest.approx(10.0) and growing["cpu_percent"] == pytest.approx(50)
    flat = figures(run(0.0), warmup_fraction=0.1, flat_kb=0.5)
    assert flat["slope_kb_per_image"] == pytest.approx(0.0, abs=1e-9) and flat["verdict"] == "plateau"
    assert figures([], 0.1, 0.5)["verdict"] == "not measured"


@pytest.mark.slow
def test_bench_soak_runs_the_watcher_and_reports_memory(models_dir: Path, tmp_path: Path) -> None:
    import bench_soak

    out = tmp_path / "results"
    code = bench_soak.main(["--models", str(models_dir), "--out", str(out), "--work", str(tmp_path / "work"),
                            "--files", "48", "--pool-images", "2", "--ahead", "4", "--interval", "0.2"])
    assert code == 0
    (path,) = out.glob("*-soak-*.json")
    data = json.loads(path.read_text())
    assert path.name == f"{data['machine']}-soak-{data['date']}.json"
    assert data["exit"] == 0 and data["files_fed"] == data["processed"] == 48 and data["states"] == {"done": 48}
    assert data["image_size"] == [128, 128] and data["tiles_per_image"] == 4 and data["dtype"] == "uint8"
    rss = data["rss_mb"]
    assert 20 < rss["warmup"] <= rss["peak"] and 20 < rss["end"] <= rss["peak"] < 4096
    assert math.isfinite(data["slope_kb_per_image"]) and data["verdict"] in ("plateau", "grows")
    assert data["images_s"]["after_warmup"] > 0 and data["threads"]["end"] > 1 and data["fds"]["end"] > 0
    assert len(data["samples"]) >= 5 and all(s["rss_mb"] > 0 for s in data["samples"])
    assert (out / data["plot"]).is_file() and "kB/image" in path.with_suffix(".md").read_text()


@pytest.mark.slow
def test_bench_cells_scores_each_way_of_finding_cells_against_the_truth(tmp_path: Path) -> None:
    import bench_cells

    code = bench_cells.main(["--quick", "--out", str(tmp_path), "--work", str(tmp_path / "work"), "--threads", "1",
                             "--tile-overlap", "16"])
    assert code == 0
    (written,) = tmp_path.glob("*-instances-accuracy-*.json")
    data = json.loads(written.read_text())
    rows = {(r["inference"], r["method"], r["model"]): r for r in data["rows"]}
    assert set(rows) == {("tiles", "distance", "heads"), ("overlap", "distance", "heads"),
                         ("field", "distance", "heads"), ("tiles", "components", "heads"),
                         ("tiles", "components", "plain")}
    assert "overlapping >= 16 px" in rows["overlap", "distance", "heads"]["label"]
    for row in data["rows"]:
        assert row["fields"] == 2 and row["true_cells"] > 0
        assert set(row["targets"]) == set(bench_cells.TARGETS)
        assert 0 <= row["metrics"]["aji"] <= 1 and row["timings_ms"]["post_processing"]["p50"] > 0
    assert "| with distance head (watershed), tiles overlapping >= 16 px |" in written.with_suffix(".md").read_text()


@pytest.mark.slow
def test_bench_accuracy_scores_tiles_and_whole_field_against_the_truth(tmp_path: Path) -> None:
    import bench_accuracy

    out = tmp_path / "results"
    code = bench_accuracy.main(["--quick", "--out", str(out), "--work", str(tmp_path / "work"), "--precisions", "fp32"])
    assert code == 0
    section = _read_day(out)["sections"]["accuracy"]
    field = [r for r in section["rows"] if r.get("inference") == "field"]
    assert field and len(field) < len(section["rows"])  # tile rows beside the whole-field ones
    for row in field:
        assert 0 <= row["vs_tiles"]["mask_dice"] <= 1 and 0 <= row["vs_tiles"]["pattern_agreement"] <= 1
    for row in section["rows"]:
        assert 0 <= row["metrics"]["patch"]["dice"] <= 1
    assert "mask Dice vs tiles" in next(out.glob("*.md")).read_text()
