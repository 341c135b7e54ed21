from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from sbe.sphere import haversine_km, latlon_to_unit, local_en_m, offset_latlon, unit_to_latlon


def test_known_distances() -> None:
    # Paris -> London about 344 km; one degree of latitude about 111.19 km
    assert abs(haversine_km(48.8566, 2.3522, 51.5074, -0.1278) - 343.6) < 1.5
    assert abs(haversine_km(0.0, 0.0, 1.0, 0.0) - 111.195) < 0.01
    assert abs(haversine_km(10.0, 179.9, 10.0, -179.9) - 21.9) < 0.1


@given(st.floats(-89.9, 89.9), st.floats(-180, 179.999))
def test_unit_roundtrip(lat: float, lon: float) -> None:
    la, lo = unit_to_latlon(latlon_to_unit(np.array([lat]), np.array([lon])))
    assert abs(la[0] - lat) < 1e-9
    assert abs(((lo[0] - lon + 180) % 360) - 180) < 1e-6


@given(st.floats(-70, 70), st.floats(-180, 180), st.floats(-500, 500), st.floats(-500, 500))
def test_local_offsets_roundtrip(lat: float, lon: float, e: float, n: float) -> None:
    la, lo = offset_latlon(np.array([lat]), np.array([lon]), np.array([e]), np.array([n]))
    en = local_en_m(la, lo, lat, lon)[0]
    assert abs(en[0] - e) < 0.5 and abs(en[1] - n) < 1e-6 + 1e-6 * abs(n)
    assert abs(haversine_km(lat, lon, la[0], lo[0]) * 1000 - np.hypot(e, n)) < 1.0
