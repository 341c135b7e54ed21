"""The ``d``-line parser: valid lines round-trip exactly; every malformed class is named."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from sbe.data.streetview import (
    D_FIELDS,
    N_D_VALUES,
    NORMAL_TOLERANCE,
    DLine,
    MetadataError,
    format_d_line,
    format_metadata,
    parse_d_line,
    parse_metadata,
)
from sbe.storage.schemas import ID_MAX, make_uid

ids = st.integers(0, ID_MAX)
finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)


@st.composite
def unit_normals(draw) -> tuple[float, float, float]:
    v = draw(st.tuples(*[st.floats(-1, 1, allow_nan=False)] * 3))
    n = math.sqrt(sum(c * c for c in v))
    assume(n > 1e-3)
    return tuple(c / n for c in v)


@st.composite
def dlines(draw) -> DLine:
    nx, ny, nz = draw(unit_normals())
    return DLine(
        dataset_id=draw(ids),
        target_id=draw(ids),
        patch_id=draw(ids),
        panorama_id=draw(ids),
        target_lat=draw(st.floats(-90, 90)),
        target_lon=draw(st.floats(-180, 180)),
        target_height=draw(finite),
        normal_x=nx,
        normal_y=ny,
        normal_z=nz,
        camera_lat=draw(st.floats(-90, 90)),
        camera_lon=draw(st.floats(-180, 180)),
        camera_height=draw(finite),
        camera_distance=draw(st.floats(0, 1e5)),
        heading=draw(st.floats(0, 360, exclude_max=True)),
        pitch=draw(st.floats(-90, 90)),
        roll=draw(finite),
    )


def tokens(d: DLine) -> list[str]:
    return format_d_line(d).split()[1:]


def line(toks: list[str], sep: str = " ") -> str:
    return "d" + sep + sep.join(toks)


@given(dlines(), st.sampled_from([" ", "  ", "\t", " \t "]))
def test_valid_lines_round_trip_exactly(d: DLine, sep: str) -> None:
    assert parse_d_line(line(tokens(d), sep)) == d
    back = parse_metadata(format_metadata(d).encode())
    assert back.d == d and back.capture_date is None and back.date_problem is None


@given(dlines(), st.dates(dt.date(1990, 1, 1), dt.date(2040, 12, 31)))
def test_capture_date_round_trips(d: DLine, date: dt.date) -> None:
    meta = parse_metadata(format_metadata(d, date))
    assert meta.d == d and meta.capture_date == date and meta.date_problem is None


def test_identifiers_pack_into_uids() -> None:
    d = parse_d_line("d 88 7 123 9 40.7 -74.0 10 1 0 0 40.7 -74.0 2.5 20 90 0 0")
    assert (d.dataset_id, d.target_id, d.patch_id, d.panorama_id) == (88, 7, 123, 9)
    assert d.image_id == make_uid(88, 123) and d.target_uid == make_uid(88, 7)


@given(dlines(), st.integers(0, 40).filter(lambda n: n != N_D_VALUES))
def test_wrong_token_count_is_named(d: DLine, n: int) -> None:
    toks = tokens(d)
    toks = (toks * 3)[:n]
    with pytest.raises(MetadataError) as e:
        parse_d_line(line(toks))
    assert e.value.kind == "token_count"
    assert f"got {n}" in str(e.value)


NOT_NUMBERS = [
    "abc",
    "nan",
    "NaN",
    "inf",
    "-inf",
    "1_000",
    "0x1f",
    "1.2.3",
    "--1",
    "1e",
    ".",
    "1,5",
]


@given(dlines(), st.integers(0, N_D_VALUES - 1), st.sampled_from(NOT_NUMBERS))
def test_non_numeric_token_is_named(d: DLine, i: int, bad: str) -> None:
    toks = tokens(d)
    toks[i] = bad
    with pytest.raises(MetadataError) as e:
        parse_d_line(line(toks))
    assert e.value.kind == "not_numeric"
    assert D_FIELDS[i] in str(e.value)


@given(dlines(), st.integers(0, 3), st.sampled_from(["1.5", "2.0", "3e2", ".5"]))
def test_fractional_identifier_is_not_an_integer(d: DLine, i: int, bad: str) -> None:
    toks = tokens(d)
    toks[i] = bad
    with pytest.raises(MetadataError) as e:
        parse_d_line(line(toks))
    assert e.value.kind == "not_integer"


def test_overflowing_float_is_not_finite() -> None:
    toks = tokens(parse_d_line("d 88 7 123 9 40.7 -74.0 10 1 0 0 40.7 -74.0 2.5 20 90 0 0"))
    toks[6] = "1e999"  # target_height
    with pytest.raises(MetadataError) as e:
        parse_d_line(line(toks))
    assert e.value.kind == "not_numeric"


# (field, strategy of values outside its range)
OUT_OF_RANGE = [
    ("dataset_id", st.integers(-(10**6), -1)),
    ("target_id", st.integers(ID_MAX + 1, 2**40)),
    ("patch_id", st.integers(-5, -1)),
    ("panorama_id", st.integers(ID_MAX + 1, ID_MAX + 10)),
    ("target_lat", st.floats(90.0, 1e4, exclude_min=True)),
    ("camera_lat", st.floats(-1e4, -90.0, exclude_max=True)),
    ("target_lon", st.floats(180.0, 1e4, exclude_min=True)),
    ("camera_lon", st.floats(-1e4, -180.0, exclude_max=True)),
    ("camera_distance", st.floats(-1e4, 0.0, exclude_max=True)),
    ("heading", st.one_of(st.floats(360.0, 1e4), st.floats(-1e4, 0.0, exclude_max=True))),
    (
        "pitch",
        st.one_of(st.floats(90.0, 1e4, exclude_min=True), st.floats(-1e4, -90.0, exclude_max=True)),
    ),
]


@pytest.mark.parametrize("name,bad", OUT_OF_RANGE, ids=[f for f, _ in OUT_OF_RANGE])
@settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_out_of_range_value_is_named(name: str, bad: st.SearchStrategy, data) -> None:
    d = data.draw(dlines())
    value = data.draw(bad)
    d = dataclasses.replace(d, **{name: value})
    with pytest.raises(MetadataError) as e:
        parse_d_line(format_d_line(d))
    assert e.value.kind == "out_of_range"
    assert name in str(e.value)


@given(
    dlines(),
    st.one_of(st.floats(0, 1 - 2 * NORMAL_TOLERANCE), st.floats(1 + 2 * NORMAL_TOLERANCE, 100)),
)
def test_non_unit_normal_is_out_of_range(d: DLine, scale: float) -> None:
    d = dataclasses.replace(
        d, normal_x=d.normal_x * scale, normal_y=d.normal_y * scale, normal_z=d.normal_z * scale
    )
    with pytest.raises(MetadataError) as e:
        parse_d_line(format_d_line(d))
    assert e.value.kind == "out_of_range" and "normal" in str(e.value)


@given(dlines(), st.floats(1 - NORMAL_TOLERANCE / 2, 1 + NORMAL_TOLERANCE / 2))
def test_normal_within_tolerance_is_accepted(d: DLine, scale: float) -> None:
    d = dataclasses.replace(
        d, normal_x=d.normal_x * scale, normal_y=d.normal_y * scale, normal_z=d.normal_z * scale
    )
    assert parse_d_line(format_d_line(d)) == d


def test_range_edges_are_inclusive_where_documented() -> None:
    d = parse_d_line("d 0 0 0 0 90 180 0 0 0 1 -90 -180 0 0 0 -90 0")
    assert (d.target_lat, d.target_lon, d.camera_lat, d.pitch, d.heading) == (90, 180, -90, -90, 0)
    d = parse_d_line(f"d {ID_MAX} {ID_MAX} {ID_MAX} {ID_MAX} 0 0 0 0 1 0 0 0 0 0 359.999 90 0")
    assert d.patch_id == ID_MAX and d.heading == 359.999
    with pytest.raises(MetadataError, match="heading"):
        parse_d_line("d 0 0 0 0 0 0 0 0 1 0 0 0 0 0 360 0 0")


VALID = "d 88 7 123 9 40.7 -74.0 10 1 0 0 40.7 -74.0 2.5 20 90 0 0"


@pytest.mark.parametrize(
    "text,kind",
    [
        (b"", "missing_d_line"),
        (b"  \n\n \t\n", "missing_d_line"),
        (b"a 1 2 3\n" + VALID.encode(), "missing_d_line"),  # the d line must come first
        (b"D" + VALID.encode()[1:], "missing_d_line"),
        (b"d88 7 123", "missing_d_line"),
        (VALID.encode() + b"\n" + VALID.encode(), "multiple_d_lines"),
        (b"\xff\xfe" + VALID.encode("utf-16-le"), "not_text"),
        (VALID.encode()[:-2] + b"\xe9", "not_text"),
    ],
)
def test_whole_file_problems_are_named(text: bytes, kind: str) -> None:
    with pytest.raises(MetadataError) as e:
        parse_metadata(text)
    assert e.value.kind == kind


def test_optional_lines_are_read_or_ignored() -> None:
    text = (
        "\ufeff" + VALID + "\r\na 1 2 3 4 5 6 7 8 9 0.5\r\nz unknown line\r\nt 2021-06-30\r\n\r\n"
    )
    meta = parse_metadata(text.encode())
    assert meta.d.patch_id == 123
    assert meta.capture_date == dt.date(2021, 6, 30) and meta.date_problem is None


@pytest.mark.parametrize(
    "date_lines",
    [
        ["t 2021-02-30"],
        ["t 2021/06/30"],
        ["t 20210630"],
        ["t"],
        ["t 2021-06-30 extra"],
        ["t 2021-06-30", "t 2022-01-01"],
    ],
)
def test_bad_capture_date_is_null_with_a_problem(date_lines: list[str]) -> None:
    meta = parse_metadata("\n".join([VALID, *date_lines]))
    assert meta.d.patch_id == 123  # the image itself stays valid
    assert meta.capture_date is None and meta.date_problem


def test_sixteen_value_loader_layout_is_rejected_not_shifted() -> None:
    # Some public loaders drop one field; reading such a line must fail, not shift every value.
    sixteen = VALID.rsplit(" ", 1)[0]
    with pytest.raises(MetadataError) as e:
        parse_d_line(sixteen)
    assert e.value.kind == "token_count" and "got 16" in str(e.value)
