"""benchmarks/pretrain_throughput.py: every row interleaved round-robin over the rounds, the bf16
rows only where asked, and what it reads of /proc/cpuinfo."""

from __future__ import annotations

from bench_script import load_benchmark

bench = load_benchmark("pretrain_throughput")


def test_every_row_runs_once_per_round_round_robin():
    order = [name for name, *_ in bench.plan(3, bf16=True, compile=True)]
    rows = ["open_clip fp32", "vlkit fp32", "open_clip amp_bf16", "vlkit bf16",
            "open_clip fp32 --torchcompile", "vlkit fp32 engine.compile"]
    assert order == rows * 3  # not all rounds of one row, then the next
    runs = {name: (side, precision, compile) for name, side, precision, compile in bench.plan(1, True, True)}
    assert runs["vlkit bf16"] == ("vlkit", "bf16", False)
    assert runs["open_clip amp_bf16"] == ("open_clip", "amp_bf16", False)
    assert runs["vlkit fp32 engine.compile"] == ("vlkit", "fp32", True)


def test_bf16_and_compile_rows_only_when_asked():
    assert [n for n, *_ in bench.plan(2, bf16=False, compile=False)] == ["open_clip fp32", "vlkit fp32"] * 2
    assert [n for n, *_ in bench.plan(1, bf16=True, compile=False)] == [
        "open_clip fp32", "vlkit fp32", "open_clip amp_bf16", "vlkit bf16"]
    # each ratio pairs a vlkit row with the open_clip row of the same precision
    names = {n for n, *_ in bench.plan(1, True, True)}
    for _, ours, theirs in bench.RATIOS:
        assert {ours, theirs} <= names and ours.startswith("vlkit") and theirs.startswith("open_clip")


CPUINFO = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_tile amx_bf16
"""


def test_cpu_support_reads_the_model_and_bf16_flags():
    info = bench.cpu_support(CPUINFO)
    assert info == {"model": "Intel(R) Xeon(R) Platinum 8480+",
                    "flags": ["avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"], "native_bf16": True}
    epyc = bench.cpu_support("model name\t: AMD EPYC\nflags\t\t: fpu avx2 fma\n")
    assert epyc == {"model": "AMD EPYC", "flags": ["avx2"], "native_bf16": False}
    assert bench.cpu_support("")["native_bf16"] is False
