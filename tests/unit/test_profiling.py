"""Profiler: counts, latency fields and the command line's JSON."""

from __future__ import annotations

import json

import pytest

from dasrlib.models.dasr import DASR
from dasrlib.models.experts import SRResNet
from dasrlib.profiling import count_gmacs, main, profile_model


def test_profile_model_reports_counts_and_cpu_latency(generator):
    model = SRResNet(num_feat=8, num_block=1, generator=generator)
    result = profile_model(model, size=16, device="cpu", repeats=3, warmup=1, generator=generator)
    assert result["params_m"] == pytest.approx(sum(p.numel() for p in model.parameters()) / 1e6)
    # conv_first, 2 body convs, upconv1 (16^2), upconv2 (32^2), conv_hr and conv_last (64^2)
    macs = 16 * 16 * (27 * 8 + 2 * 72 * 8 + 72 * 32) + 32 * 32 * 72 * 32
    macs += 64 * 64 * (72 * 8 + 72 * 3)
    assert result["gmacs"] == pytest.approx(macs / 1e9)
    assert len(result["latency_runs_ms"]) == 3
    assert result["latency_ms"] > 0 and result["peak_mem_mb"] is None


def test_gmacs_scale_with_the_pixel_count_for_convolutional_models():
    model = SRResNet().to("meta")
    assert count_gmacs(model, size=(64, 96)) * (256 * 256) / (64 * 96) == pytest.approx(
        count_gmacs(model, size=256), rel=1e-9
    )


def test_dasr_profile_counts_the_fused_inference_path(generator):
    model = DASR(num_feat=8, num_block=1, predictor_feat=8, generator=generator)
    expert = count_gmacs(model.plain_expert(), size=16)
    predictor = count_gmacs(model.predictor, size=16)
    mixing = model.experts.bank.numel() / 1e9
    weighting = (33 * 15 + 15 * 5) / 1e9
    total = profile_model(model, size=16, latency=False)["gmacs"]
    assert total == pytest.approx(expert + predictor + mixing + weighting, rel=1e-9)


def test_command_line_prints_one_json_object(capsys):
    assert main(["--model", "predictor", "--size", "256", "--json", "--meta"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["params_m"] == pytest.approx(0.4676, abs=1e-4)
    assert result["gmacs"] == pytest.approx(17.96, abs=0.01)


def test_command_line_passes_model_options_and_times(capsys):
    argv = [
        "--model",
        "dasr_n3",
        "--size",
        "8",
        "--json",
        "--latency",
        "--device",
        "cpu",
        "--repeats",
        "2",
        "--warmup",
        "0",
        "--option",
        "num_feat=8",
        "--option",
        "num_block=1",
    ]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["options"] == {"num_feat": 8, "num_block": 1}
    assert result["latency_ms"] > 0
    assert result["params_m"] * 1e6 == pytest.approx(
        sum(p.numel() for p in DASR(num_experts=3, num_feat=8, num_block=1).parameters())
    )


def test_meta_and_latency_are_exclusive():
    with pytest.raises(SystemExit):
        main(["--model", "srresnet", "--meta", "--latency"])


def test_unknown_model_is_a_usage_error_naming_it(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--model", "no_such_net", "--meta"])
    assert exit_info.value.code == 2
    assert "no_such_net" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["--size", "0"],
        ["--size", "-5"],
        ["--repeats", "0", "--latency"],
        ["--precision", "fp8"],
        ["--device", "tpu9"],
    ],
)
def test_bad_values_are_usage_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--model", "predictor", "--meta", *argv] if "--latency" not in argv
             else ["--model", "predictor", *argv])  # fmt: skip
    assert info.value.code == 2
    assert argv[1] in capsys.readouterr().err
