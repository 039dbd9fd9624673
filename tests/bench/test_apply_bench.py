"""`transform bench-apply` on a few dozen files: every contender runs on the same files, the
engines' PNGs are identical, an exact network stays within 1/255 of the per-image loop, the
memory passes are apart from the timed ones, and the scratch file system is recorded."""
from cifarlab.bench.apply_bench import bench_apply
from cifarlab.transform import TransformConfig, train


def test_bench_apply_times_every_contender_on_the_same_files(subset_path, tmp_path):
    run = train(TransformConfig(data=str(subset_path), epochs=1, logger="none", device="cpu"),
                out=str(tmp_path / "run"), quiet=True)   # the default pipeline starts at its exact operator
    results = bench_apply(run, subset_path, tmp_path / "scratch", images=40, memory_images=60, ray=False)
    rows = {(r["engine"], r["images"]): r for r in results["rows"]}
    assert set(rows) == {("loop (PIL + v2)", 40), ("floor: write the files only", 40), ("apply --workers 1", 40), ("apply --workers 2", 40),
                         ("apply --workers 2 (memory pass)", 40), ("apply --workers 2 (memory pass)", 60)}
    timed = [r for r in results["rows"] if not r["memory_pass"]]
    assert all(r["peak_pss_mb"] is None and r["vs_loop"] > 0 for r in timed)
    assert all(r["peak_pss_mb"] > 0 for r in results["rows"] if r["memory_pass"])
    assert rows["loop (PIL + v2)", 40]["vs_loop"] == 1.0
    checks = results["checks"]
    assert checks["workers1 == workers2"] == {"same_files": True, "identical": True, "ok": True, "differing_files": 0}
    assert checks["workers2 within 1/255 of loop"]["ok"], checks
    assert results["machine"]["scratch_filesystem"] != "unknown"
    assert len(list((tmp_path / "scratch" / "out-40-workers2").rglob("*.png"))) == 40
    assert "| apply --workers 2 (memory pass) | 60 |" in results["markdown"]
