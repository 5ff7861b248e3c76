"""The run-folder layout, named in one module."""

from pathlib import Path

from restpg.runs import STEP_NAME, RunFolder, StepFolder, round_name


def test_a_run_folder_names_its_files_and_steps(tmp_path):
    run = RunFolder(tmp_path / "run")
    assert round_name(0) == "sft" and round_name(2) == "round-2"
    assert run.round(0) == run.sft == StepFolder(tmp_path / "run" / "sft")
    assert run.round(2).adapter == tmp_path / "run" / "round-2" / "adapter"
    assert RunFolder.of_adapter(run.round(2).adapter) == run
    assert run.manifest.name == "manifest.json" and run.sft.metrics.name == "metrics.json"
    assert [bool(STEP_NAME.fullmatch(n)) for n in ("sft", "round-3", "round-x", "logs")] == [True, True, False, False]
    assert not run.sft.trained
    run.sft.adapter.mkdir(parents=True)
    (run.sft.adapter / "adapter_config.json").write_text("{}")
    assert run.sft.trained and StepFolder(Path(run.sft.path)).name == "sft"
