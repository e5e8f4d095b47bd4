"""inference/negotiation.py: Accept headers (RFC 9110) against the type a predictor's file has."""

from __future__ import annotations

import pytest

from meshnode.inference.negotiation import NotAcceptable, Preference, choose, parse_accept


def test_accept_is_parsed_with_weights_and_bad_weights_count_as_zero() -> None:
    assert parse_accept("image/png, image/*;q=0.5, */*;q=x, junk") == [
        Preference("image/png", 1.0),
        Preference("image/*", 0.5),
        Preference("*/*", 0.0),
    ]


@pytest.mark.parametrize(
    ("accept", "made", "answer"),
    [
        pytest.param("", "image/png", "image/png", id="no-accept-header"),
        pytest.param("image/png", "image/png", "image/png", id="exact"),
        pytest.param("*/*", "image/png", "image/png", id="anything"),
        pytest.param("image/*", "image/png", "image/png", id="any-image"),
        pytest.param("image/jpeg", "image/png", "image/jpeg", id="convert"),
        pytest.param("image/webp;q=0.9, image/jpeg;q=0.5", "image/png", "image/webp", id="best-weight"),
        pytest.param("image/*, image/png;q=0", "image/png", "image/jpeg", id="specific-q0-overrides"),
    ],
)
def test_the_answer_type_is_the_files_own_or_an_image_to_convert_to(
    accept: str, made: str, answer: str
) -> None:
    assert choose(accept, made) == answer


@pytest.mark.parametrize(
    ("accept", "made"),
    [
        pytest.param("text/csv", "image/png", id="not-an-image-type"),
        pytest.param("image/jpeg", "application/pdf", id="cannot-convert"),
        pytest.param("image/*;q=0", "image/png", id="images-refused"),
    ],
)
def test_nothing_acceptable_is_not_acceptable(accept: str, made: str) -> None:
    with pytest.raises(NotAcceptable, match=made):
        choose(accept, made)
