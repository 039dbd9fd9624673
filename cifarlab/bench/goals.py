"""The issue's goals, as ratios against floors timed in the same run."""
from __future__ import annotations

from .timing import paired_ratio

GOAL_BATCH = 1024
PROTOCOL_BATCH = 64
MIN_PSNR_DB = 60.0


def find(rows, contender, device, batch_size=None, source="resident", variant=None):
    for row in rows:
        if (row["contender"] == contender and row["device"] == device and row["batch_size"] == batch_size
                and row["source"] == source and (variant is None or row.get("variant") == variant)):
            return row
    return None


def fastest_model(rows, device, batch_size, source="resident"):
    """The fastest model-fast variant that kept its quality."""
    kept = [r for r in rows if r["contender"] == "model-fast" and r["device"] == device and r.get("kept")
            and r["batch_size"] == batch_size and r["source"] == source]
    return min(kept, key=lambda r: r["median"], default=None)


def break_even(rows, device, contender="model-reference", variant="plain"):
    """The smallest batch size at which `contender` beats the sequential loop, or None."""
    seq = find(rows, "sequential", "cpu")
    if seq is None:
        return None
    wins = [r["batch_size"] for r in rows if r["contender"] == contender and r["device"] == device
            and r.get("variant") == variant and r["source"] in ("resident", "host") and r["median"] < seq["median"]]
    return min(wins, default=None)


def goal_batch(batch_sizes) -> int:
    """The batch size the CPU goals are judged at: 1024, or the largest one measured."""
    return GOAL_BATCH if GOAL_BATCH in batch_sizes else max(batch_sizes)


def _goal(name, value, target, met, note=""):
    return {"goal": name, "value": value, "target": target, "met": met, "note": note}


def evaluate_goals(rows, batch_sizes) -> list[dict]:
    goals = []
    big = goal_batch(batch_sizes)
    for label, pick in (("fastest path", lambda: fastest_model(rows, "cpu", big)),
                        ("plain cifarlab.load artifact", lambda: find(rows, "model-fast", "cpu", big, variant="plain"))):
        model = pick()
        if model is None:
            continue
        tag = f"CPU, batch {big}, {label}" + (f" [{model['variant']}]" if label == "fastest path" else "")
        copy = find(rows, "memory-copy", "cpu", big)
        whole = find(rows, "memory-copy-whole", "cpu")
        tv = find(rows, "batched-torchvision", "cpu", big)
        r = paired_ratio(model, whole)
        goals.append(_goal(f"{tag}: time / memory copy of the input tensor (one clone)", r, "<= 1.5",
                           r is not None and r <= 1.5))
        r = paired_ratio(model, copy)
        goals.append(_goal(f"{tag}: time / per-batch in-cache copy", r, "<= 1.5",
                           r is not None and r <= 1.5, note="a stricter floor than the issue asks for"))
        r = paired_ratio(tv, model)
        goals.append(_goal(f"{tag}: batched-torchvision / model", r, ">= 3", r is not None and r >= 3))
        p = model.get("psnr")
        goals.append(_goal(f"{tag}: PSNR (dB)", p, f">= {MIN_PSNR_DB:g}", p is not None and p >= MIN_PSNR_DB))
    onnx, plain = find(rows, "model-fast", "cpu", big, variant="onnxruntime"), find(rows, "model-fast", "cpu", big,
                                                                                   variant="plain")
    torch_rows = [r for r in rows if r["contender"] == "model-fast" and r["device"] == "cpu" and r.get("kept")
                  and r["batch_size"] == big and r["source"] == "resident" and r.get("variant") != "onnxruntime"]
    fastest_torch = min(torch_rows, key=lambda r: r["median"], default=None)
    if onnx and fastest_torch:
        r = paired_ratio(onnx, fastest_torch)
        goals.append(_goal(f"CPU, batch {big}: onnxruntime / fastest PyTorch path [{fastest_torch['variant']}]", r,
                           "<= 1.5", r is not None and r <= 1.5))
    u8 = find(rows, "model-fast", "cpu", big, variant="uint8")
    if u8 and plain:
        r = paired_ratio(u8, plain)
        goals.append(_goal(f"CPU, batch {big}: uint8 input / float input (plain)", r, "<= 1", r is not None and r <= 1))
    seq, one = find(rows, "sequential", "cpu"), find(rows, "model-fast", "cpu", 1, variant="plain")
    if seq and one:
        r = paired_ratio(seq, one)
        goals.append(_goal("CPU, batch 1, plain artifact: sequential / model", r, "> 1", r > 1))
    ref, floor = find(rows, "model-reference", "cpu", PROTOCOL_BATCH, "host"), find(
        rows, "dataloader-floor", "cpu", PROTOCOL_BATCH, "host")
    if ref and floor:
        r = paired_ratio(ref, floor)
        goals.append(_goal(f"CPU, reference protocol, batch {PROTOCOL_BATCH}: model / DataLoader alone", r, "<= 2.5",
                           r <= 2.5, note=f"sequential / model = {paired_ratio(seq, ref):.2f}x" if seq else ""))
    for device in sorted({r["device"] for r in rows} - {"cpu"}):
        for source, where, floor_name in (("host", "from the host", "host-to-device copy"),
                                          ("resident", "resident on the device", "device-to-device copy")):
            model = fastest_model(rows, device, big, source)
            r = paired_ratio(model, find(rows, "memory-copy", device, big, source))
            goals.append(_goal(f"{device}, data {where}, batch {big}: model / {floor_name}", r, "<= 1.5",
                               r is not None and r <= 1.5))
        u8, copy = find(rows, "model-fast", device, big, "host", "uint8"), find(rows, "memory-copy", device, big, "host")
        r = paired_ratio(u8, copy)
        goals.append(_goal(f"{device}, uint8 input from host, batch {big}: model / float32 transfer", r,
                           "< 1 (below the float floor)", r is not None and r < 1))
    return goals
