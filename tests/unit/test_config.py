"""Membership settings: the named profiles, memberlist's formulas, and what is refused."""

from __future__ import annotations

import math
from dataclasses import fields, replace

import pytest

from meshnode.mesh.config import PROFILES, MembershipConfig

LAN = MembershipConfig.lan()
LOCAL = MembershipConfig.local()


# -- profiles ------------------------------------------------------------------------------


def test_lan_is_memberlists_default_lan_config() -> None:
    """hashicorp/memberlist config.go, DefaultLANConfig."""
    assert LAN.probe_interval_s == 1.0
    assert LAN.probe_timeout_s == 0.5
    assert LAN.indirect_checks == 3
    assert LAN.suspicion_mult == 4
    assert LAN.suspicion_max_timeout_mult == 6
    assert LAN.retransmit_mult == 4
    assert LAN.gossip_interval_s == 0.2
    assert LAN.gossip_nodes == 3
    assert LAN.gossip_to_the_dead_s == 30.0
    assert LAN.push_pull_interval_s == 30.0
    assert LAN.awareness_max_multiplier == 8


def test_local_has_the_documented_timings() -> None:
    """docs/membership.md: PI 200 ms, probe timeout 100 ms, SM 4, SMT 6, GI 50 ms, f 3."""
    assert LOCAL.probe_interval_s == 0.2
    assert LOCAL.probe_timeout_s == 0.1
    assert LOCAL.suspicion_mult == 4
    assert LOCAL.suspicion_max_timeout_mult == 6
    assert LOCAL.gossip_interval_s == 0.05
    assert LOCAL.gossip_nodes == 3


def test_local_keeps_the_size_limits_so_profiles_can_share_a_mesh() -> None:
    """A packet one profile may send, the other must accept."""
    for name in ("max_packet_bytes", "max_meta_bytes", "max_members", "packet_budget_bytes"):
        assert getattr(LOCAL, name) == getattr(LAN, name), name


def test_the_default_config_is_lan() -> None:
    assert MembershipConfig() == LAN


@pytest.mark.parametrize("name", PROFILES)
def test_profiles_are_found_by_name(name: str) -> None:
    assert MembershipConfig.profile(name) == getattr(MembershipConfig, name)()


@pytest.mark.parametrize("name", ["wan", "", "LAN", "local "])
def test_an_unknown_profile_is_a_value_error_naming_the_choices(name: str) -> None:
    with pytest.raises(ValueError, match="lan, local"):
        MembershipConfig.profile(name)


# -- memberlist's formulas -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "cluster_size", "expected_s"),
    [
        # SM * max(1, log10 N) * PI: below ten nodes the scale is 1.
        (LAN, 0, 4.0),
        (LAN, 1, 4.0),
        (LAN, 5, 4.0),
        (LAN, 10, 4.0),
        (LAN, 50, 4.0 * math.log10(50)),  # 6.796 s
        (LAN, 100, 8.0),
        (LAN, 1000, 12.0),
        (LOCAL, 10, 0.8),
        (LOCAL, 20, 0.8 * math.log10(20)),  # 1.041 s
        (LOCAL, 1000, 2.4),
    ],
)
def test_suspicion_min(config: MembershipConfig, cluster_size: int, expected_s: float) -> None:
    assert config.suspicion_min_s(cluster_size) == pytest.approx(expected_s)


@pytest.mark.parametrize(
    ("config", "cluster_size", "expected_s"),
    [(LAN, 10, 24.0), (LAN, 100, 48.0), (LOCAL, 5, 4.8), (LOCAL, 1000, 14.4)],
)
def test_suspicion_max_is_smt_times_min(
    config: MembershipConfig, cluster_size: int, expected_s: float
) -> None:
    assert config.suspicion_max_s(cluster_size) == pytest.approx(expected_s)


@pytest.mark.parametrize(
    ("cluster_size", "expected"),
    # RM * ceil(log10(N + 1)): steps up when N + 1 passes a power of ten.
    [(1, 4), (5, 4), (9, 4), (10, 8), (98, 8), (99, 8), (100, 12), (999, 12), (1000, 16)],
)
def test_retransmit_limit(cluster_size: int, expected: int) -> None:
    assert LAN.retransmit_limit(cluster_size) == expected
    assert LOCAL.retransmit_limit(cluster_size) == expected


@pytest.mark.parametrize(
    ("cluster_size", "multiplier"),
    # memberlist's TestPushPullScale: unchanged up to 32 nodes, then +1 per doubling.
    [(1, 1), (32, 1), (33, 2), (64, 2), (65, 3), (128, 3), (129, 4), (1000, 6)],
)
def test_push_pull_slows_down_above_32_nodes(cluster_size: int, multiplier: int) -> None:
    assert LAN.push_pull_scaled_s(cluster_size) == 30.0 * multiplier
    assert LOCAL.push_pull_scaled_s(cluster_size) == LOCAL.push_pull_interval_s * multiplier


def test_dissemination_follows_the_design_formula() -> None:
    # GI * ln((N + 1) P / (1 - P)) / (f / 2) with P = (N - 1) / N: at N = 10, 0.05 * ln(99) / 1.5.
    assert LOCAL.dissemination_s(10) == pytest.approx(0.05 * math.log(99) / 1.5)
    assert LOCAL.dissemination_s(10, fraction=0.5) == pytest.approx(0.05 * math.log(11) / 1.5)


def test_dissemination_takes_at_least_one_gossip_round() -> None:
    assert LOCAL.dissemination_s(2) == LOCAL.gossip_interval_s
    assert LOCAL.dissemination_s(1) == LOCAL.gossip_interval_s


@pytest.mark.parametrize("cluster_size", [5, 10, 20])
def test_local_detects_a_crash_everywhere_within_the_documented_range(cluster_size: int) -> None:
    """docs/membership.md: with the local profile a crash is seen everywhere in about 1.4-2.0 s."""
    assert 1.4 <= LOCAL.expected_detection_s(cluster_size) <= 2.0


def test_expected_detection_is_the_sum_of_its_documented_terms() -> None:
    # first detection 1.58 PI + probe round PI + suspicion min + dissemination, at N = 10.
    expected = 1.58 * 0.2 + 0.2 + 0.8 + 0.05 * math.log(99) / 1.5
    assert LOCAL.expected_detection_s(10) == pytest.approx(expected)


def test_detection_slows_as_the_mesh_grows_and_lan_is_several_times_slower() -> None:
    sizes = [2, 5, 10, 20, 100, 1000]
    local = [LOCAL.expected_detection_s(n) for n in sizes]
    assert local == sorted(local)
    for n in sizes:
        assert LAN.expected_detection_s(n) >= 4 * LOCAL.expected_detection_s(n)


# -- validation ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", [field.name for field in fields(MembershipConfig)])
@pytest.mark.parametrize("value", [0, -1])
def test_every_setting_must_be_positive(name: str, value: int) -> None:
    with pytest.raises(ValueError, match=name):
        MembershipConfig(**{name: value})


def test_a_probe_timeout_longer_than_the_interval_is_refused() -> None:
    with pytest.raises(ValueError, match="probe_timeout_s"):
        MembershipConfig(probe_interval_s=0.5, probe_timeout_s=0.6)
    with pytest.raises(ValueError, match="probe_timeout_s"):
        replace(LOCAL, probe_timeout_s=0.3)


def test_a_probe_timeout_equal_to_the_interval_is_allowed() -> None:
    assert MembershipConfig(probe_interval_s=0.5, probe_timeout_s=0.5).probe_timeout_s == 0.5


def test_a_config_cannot_be_changed_after_validation() -> None:
    """Frozen, so a value that passed validation stays valid; overrides go through replace()."""
    with pytest.raises(AttributeError):
        LAN.probe_interval_s = -1.0  # type: ignore[misc]
