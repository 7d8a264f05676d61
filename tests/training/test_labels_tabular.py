"""Labels from participants.tsv (column or safe rule) and fold-fitted tabular features."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from m2m_bids.exitcodes import AppError, ExitCode
from m2m_bids.label_rule import LabelRule, RuleError
from m2m_bids.model_inputs.tabular import TabularEncoder
from m2m_bids.training.labels import derive_labels


@pytest.fixture
def table() -> pd.DataFrame:
    return pd.DataFrame({"diagnosis": ["CN", "AD", "MCI", None, "AD", "cn?"],
                         "ttau": [200.0, 500.0, 300.0, 400.0, None, 100.0],
                         "abeta42": [1000.0, 900.0, 1000.0, 1000.0, 800.0, 1000.0],
                         "age": [70.0, np.nan, 80.0, 60.0, 75.0, 65.0],
                         "sex": ["F", "M", "M", None, "F", "X"]},
                        index=["01", "02", "03", "04", "05", "06"])


def test_label_column_with_chosen_classes_and_order(table):
    labels = derive_labels(table, list(table.index) + ["07"], label_column="diagnosis", classes=["CN", "AD"])
    assert labels.y.to_dict() == {"01": 0, "02": 1, "05": 1}
    assert labels.excluded == {"03": "label 'MCI' is not one of the classes ['CN', 'AD']",
                               "04": "label missing or rule inputs missing",
                               "06": "label 'cn?' is not one of the classes ['CN', 'AD']",
                               "07": "no row in participants.tsv"}
    three = derive_labels(table, list(table.index), label_column="diagnosis", classes=["CN", "MCI", "AD"])
    assert three.y.to_dict() == {"01": 0, "02": 2, "03": 1, "05": 2}


def test_biomarker_rule_of_the_paper(table):
    labels = derive_labels(table, list(table.index), label_column="diagnosis", classes=["CN", "AD"],
                           label_rule="ttau / abeta42 > 0.24")
    # ratios: 0.2, 0.556, 0.3, 0.4, missing, 0.1
    assert labels.y.to_dict() == {"01": 0, "02": 1, "03": 1, "04": 1, "06": 0}
    assert "05" in labels.excluded


def test_conditional_rule_names_classes():
    frame = pd.DataFrame({"mmse": [29, 25, 18, np.nan]}, index=["a", "b", "c", "d"])
    rule = "'CN' if mmse >= 27 else ('MCI' if mmse >= 20 else 'AD')"
    labels = derive_labels(frame, ["a", "b", "c", "d"], label_column="x", classes=["CN", "MCI", "AD"],
                           label_rule=rule)
    assert labels.y.to_dict() == {"a": 0, "b": 1, "c": 2}
    assert LabelRule.parse("log(ttau) - log10(abeta42) > 1 and not age < 60").columns == ("ttau", "abeta42", "age")


@pytest.mark.parametrize("rule", ["__import__('os').system('x')", "ttau.real > 1", "(lambda: 1)()",
                                  "[ttau][0] > 1", "ttau if", "open('f')"])
def test_rule_parser_rejects_anything_outside_the_whitelist(rule):
    with pytest.raises(RuleError):
        LabelRule.parse(rule)


def test_rule_errors_are_usage_errors(table):
    with pytest.raises(AppError) as err:
        derive_labels(table, ["01"], label_column="diagnosis", classes=["CN", "AD"], label_rule="ptau > 1")
    assert err.value.code is ExitCode.USAGE and "ptau" in err.value.message
    with pytest.raises(AppError) as err:
        derive_labels(table, ["01"], label_column="dx", classes=["CN", "AD"])
    assert err.value.code is ExitCode.DATA_ERROR


def test_tabular_encoder_fits_on_training_rows_only(table):
    train = table.loc[["01", "02", "03"]]
    enc = TabularEncoder.fit(train, ["age", "sex"])
    assert enc.numeric["age"].median == 75.0 and enc.numeric["age"].mean == pytest.approx(75.0)
    assert enc.categorical["sex"] == ["F", "M"]
    assert enc.feature_names == ["age", "age__missing", "sex=F", "sex=M", "sex__missing"]
    x = enc.transform(table)
    assert x.dtype == np.float32 and x.shape == (6, 5)
    np.testing.assert_allclose(x[:, 0], (np.array([70, 75, 80, 60, 75, 65]) - 75.0) / enc.numeric["age"].std,
                               rtol=1e-6)
    np.testing.assert_array_equal(x[:, 1], [0, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(x[:, 2:], [[1, 0, 0], [0, 1, 0], [0, 1, 0], [0, 0, 1], [1, 0, 0], [0, 0, 1]])
    again = TabularEncoder.from_dict(enc.to_dict())
    np.testing.assert_array_equal(again.transform(table), x)
    assert TabularEncoder.fit(train, []).transform(table).shape == (6, 0)
    with pytest.raises(AppError):
        TabularEncoder.fit(train, ["bmi"])
