"""The learnability survey, in a smoke size: well-formed tables and picture, and resume."""
import json

import pytest

from cifarlab.errors import CifarlabError
from cifarlab.pipeline.steps import STEPS
from cifarlab.transform.survey import STEP_ARGUMENTS, run_survey, survey_items


def test_every_registered_step_has_survey_arguments_and_every_pipeline_parses():
    assert set(STEP_ARGUMENTS) == set(STEPS)
    items = survey_items()
    assert len([i for i in items if i.table == "steps"]) == len(STEPS)
    assert all(i.pipeline.endswith("resize:28x28,grayscale,hflip,vflip") for i in items)
    with pytest.raises(CifarlabError, match="unknown step"):
        survey_items("blur")


def test_a_two_step_survey_writes_tables_and_picture_and_resumes(tmp_path, make_folder):
    data = make_folder(tmp_path / "data", per_class=6)
    out = tmp_path / "survey"
    # color=false: hue is learned (its exact front is a colour table, the test below)
    report = run_survey(str(data), out, time_budget=1.5, steps="hflip,adjust_hue", chains=False, quiet=True,
                        model_args={"color": False})
    text = report.read_text()
    table = [line for line in text.splitlines() if line.startswith("| `")]
    assert [line.split("|")[1].strip() for line in table] == ["`hflip`", "`adjust_hue`"]   # in the order given
    hflip, hue = json.loads((out / "survey.json").read_text())["rows"]
    assert (hue["linear"], hflip["linear"]) == (False, True)
    assert hflip["exact_psnr"] > 100 and hue["exact_psnr"] is None
    assert 0 < hue["psnr"] and hue["seconds"] >= 1.5
    # a linear step starts at its probed operator and needs no training (init="auto")
    assert hflip["psnr"] > 100 and hflip["epochs"] == 0 and hflip["ssim"] > 0.999
    assert (out / "survey.png").stat().st_size > 0
    # each network's forward cost, timed beside a copy of its input: a positive ratio in the table
    assert hue["forward_ms"] > 0 and hue["forward_vs_copy"] > 0 and "× |" in table[1]
    assert hue["weights"] == hue["parameters"] and hflip["weights"] == hflip["parameters"]   # no fronts here
    assert hue["fronts"] == hflip["fronts"] == "" and "Model options: `color=false`" in text

    # cut off during the second run: its row and its metrics are gone; a re-run redoes only that one
    state = json.loads((out / "survey.json").read_text())
    state["rows"] = state["rows"][:1]
    (out / "survey.json").write_text(json.dumps(state))
    (out / "runs" / "01-adjust-hue" / "metrics.json").unlink()
    first_model = (out / "runs" / "00-hflip" / "model.pt").read_bytes()
    run_survey(str(data), out, time_budget=1.5, steps="hflip,adjust_hue", chains=False, quiet=True,
               model_args={"color": False})
    rows = json.loads((out / "survey.json").read_text())["rows"]
    assert [r["name"] for r in rows] == ["hflip", "adjust_hue"]
    assert (out / "runs" / "00-hflip" / "model.pt").read_bytes() == first_model

    with pytest.raises(CifarlabError, match="other settings"):
        run_survey(str(data), out, time_budget=3, steps="hflip", chains=False, quiet=True)
    with pytest.raises(CifarlabError, match="other settings"):   # the same, without the model options
        run_survey(str(data), out, time_budget=1.5, steps="hflip,adjust_hue", chains=False, quiet=True)


def test_a_hue_row_is_a_colour_table_refined_for_the_budget(tmp_path, make_folder):
    data = make_folder(tmp_path / "data", per_class=6)
    run_survey(str(data), tmp_path / "survey", time_budget=2, steps="adjust_hue", chains=False, quiet=True)
    (hue,) = json.loads((tmp_path / "survey" / "survey.json").read_text())["rows"]
    assert hue["fronts"] == "color" and hue["epochs"] >= 1 and hue["seconds"] >= 2 and hue["psnr"] > 50
    assert hue["weights"] == hue["parameters"] > 3 * 65 ** 3    # the table is a weight: it is trained
