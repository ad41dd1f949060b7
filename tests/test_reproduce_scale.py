"""Scale: the one value a reproduction receives for full / --quick / the smoke version."""

import pytest

from fedarena.reproduce.quick import DIGITS, FULL, Scale, scale


def test_of_maps_the_older_quick_values():
    # legacy spellings: False -> FULL, True -> QUICK, "smoke" -> SMOKE; a Scale maps to itself
    assert Scale.of(False) is Scale.FULL
    assert Scale.of(True) is Scale.QUICK
    assert Scale.of("smoke") is Scale.SMOKE
    assert Scale.of("full") is Scale.FULL
    for s in Scale:
        assert Scale.of(s) is s
        assert Scale.of(s.legacy) is s
    with pytest.raises(ValueError, match="valid: full, quick, smoke"):
        Scale.of("fast")


def test_truth_value_and_settings_match_the_older_flag():
    # bool(quick) was False only for the full scale; "smoke" always picks the digits setting
    assert [bool(s) for s in Scale] == [False, True, True]
    assert scale(Scale.FULL) == FULL == scale(False)
    assert scale(Scale.SMOKE) == DIGITS == scale("smoke")
