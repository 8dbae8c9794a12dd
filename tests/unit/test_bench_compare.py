"""``mabl bench compare`` (mabl.bench_compare): the interleaved pairs, their order and warm-up, the
medians and the paired ratio, on a fake clock; the variant syntax and its one-line refusals; ``mabl bench
gpu`` handing its flags to the GPU check."""

from __future__ import annotations

import pytest

from mabl.bench_compare import paired_times, parse_variant, summarize
from mabl.cli import main
from mabl.errors import MablError


def test_pairs_alternate_their_order_after_untimed_warmup():
    now = [0.0]
    calls = []
    cost = {"a": iter([100.0, 100.0, 3.0, 6.0, 9.0]), "b": iter([100.0, 100.0, 1.0, 2.0, 3.0])}

    def run(name):
        def go():
            calls.append(name)
            now[0] += next(cost[name])
        return go

    a, b = paired_times(run("a"), run("b"), pairs=3, warmup=2, clock=lambda: now[0])
    assert calls == ["a", "b", "b", "a", "a", "b", "b", "a", "a", "b"]  # A B, B A, ...
    assert a == [3.0, 6.0, 9.0] and b == [1.0, 2.0, 3.0]  # the warm-up pairs are not timed
    s = summarize(a, b)
    assert (s["a_median_s"], s["b_median_s"], s["pairs"]) == (6.0, 2.0, 3)
    assert s["ratio_median"] == pytest.approx(3.0) and s["ratio_min"] == s["ratio_max"] == pytest.approx(3.0)


def test_ratio_is_the_median_of_per_pair_ratios_not_of_medians():
    s = summarize([2.0, 10.0, 3.0], [1.0, 20.0, 1.0])  # ratios 2, 0.5, 3
    assert s["ratio_median"] == pytest.approx(2.0) and s["a_median_s"] / s["b_median_s"] == pytest.approx(3.0)
    assert (s["ratio_min"], s["ratio_max"]) == (pytest.approx(0.5), pytest.approx(3.0))


def test_variant_syntax():
    assert parse_variant("", "--a") == {}
    assert parse_variant("compile=true, model.hidden=64", "--a") == {"compile": "true", "model.hidden": "64"}
    with pytest.raises(MablError, match="'--compile' is not FIELD=VALUE"):
        parse_variant("--compile", "--b")


@pytest.mark.parametrize("argv, message", [
    (["--a", "amp=maybe", "--b", ""], "amp='maybe' is not a boolean"),
    (["--a", "", "--b", "", "--pairs", "0"], "--pairs=0 must be > 0"),
    (["--a", "model.nope=1", "--b", ""], "model.nope"),
])
def test_refusals_are_one_line(capsys, argv, message):
    assert main(["bench", "compare", "--preset", "debug", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_bench_gpu_hands_every_flag_to_the_gpu_check(monkeypatch):
    import mabl.gpu_check

    seen = []
    monkeypatch.setattr(mabl.gpu_check, "main", lambda argv: seen.append(argv) or 0)
    assert main(["bench", "gpu", "--help"]) == 0
    assert main(["bench", "gpu", "--out", "o", "--quick", "--device", "cpu"]) == 0
    assert seen == [["--help"], ["--out", "o", "--quick", "--device", "cpu"]]
    monkeypatch.setattr(mabl.gpu_check, "main", lambda argv: 2)
    with pytest.raises(SystemExit) as stop:
        main(["bench", "gpu", "--out", "o"])
    assert stop.value.code == 2


def test_every_clock_is_read_around_the_same_runs():
    wall, cpu = [0.0], [0.0]

    def run(w, c):
        def go():
            wall[0] += w
            cpu[0] += c
        return go

    from mabl.bench_compare import paired_clocks

    out = paired_clocks(run(4.0, 1.0), run(2.0, 1.0), pairs=2, warmup=1,
                        clocks={"wall": lambda: wall[0], "cpu": lambda: cpu[0]})
    assert out["wall"] == ([4.0, 4.0], [2.0, 2.0]) and out["cpu"] == ([1.0, 1.0], [1.0, 1.0])
