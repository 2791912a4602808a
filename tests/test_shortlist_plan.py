"""The shortlist's plan: as few probe passes as the budget allows, of equal size, and what it records."""

import numpy as np

from reid_eval.matching.plan import (
    GATHER_MAX_ROWS,
    SHORTLIST_GALLERY_SHARE,
    SHORTLIST_GATHER_SHARE,
    SHORTLIST_GLOBAL_SHARE,
    ShortlistPlan,
    operand_bytes,
    plan_shortlist,
    shortlist_gather_rows,
)


def _offsets(n: int, m: int) -> np.ndarray:
    return np.arange(n + 1, dtype=np.int64) * m


def test_market_size_at_four_gigabytes_takes_two_equal_passes():
    """3,368 probes of 110 locations at d = 2048 need 6.1 GB prepared: two passes of 1,684 images, not 2 + a sliver."""
    poff, goff = _offsets(3368, 110), _offsets(15913, 110)
    plan = plan_shortlist(poff, goff, 2048, memory_budget_bytes=4_000_000_000, concurrent_tiles=2)
    assert plan.probe_blocks == ((0, 1684), (1684, 3368))
    rest = 1 - SHORTLIST_GALLERY_SHARE - SHORTLIST_GLOBAL_SHARE - SHORTLIST_GATHER_SHARE
    per_row = (4 + operand_bytes("float32")) * 2048 + 72
    assert plan.probe_rows * per_row <= rest * 4e9  # the pass fits its share
    assert all(b - a <= plan.gallery_rows // 110 for a, b in plan.gallery_blocks)
    assert plan.gallery_blocks[0][0] == 0 and plan.gallery_blocks[-1][1] == 15913


def test_one_pass_when_the_probes_fit_and_images_never_split():
    poff, goff = _offsets(10, 7), _offsets(20, 7)
    assert plan_shortlist(poff, goff, 16, memory_budget_bytes=10**9, concurrent_tiles=1).probe_blocks == ((0, 10),)
    tiny = plan_shortlist(poff, goff, 16, memory_budget_bytes=1000, concurrent_tiles=1)
    assert all(b - a == 1 for a, b in tiny.probe_blocks + tiny.gallery_blocks)  # one image when nothing more fits


def test_gather_rows_follow_the_budget_and_threads_within_their_bounds():
    assert shortlist_gather_rows(10**12, 2, 2048, 110) == GATHER_MAX_ROWS
    assert shortlist_gather_rows(1000, 2, 2048, 110) == 110  # at least one image
    per_row = 4 * 2048 + 12 * 111 + 64
    assert shortlist_gather_rows(4 * 10**8, 4, 2048, 110) == int(SHORTLIST_GATHER_SHARE * 10**8 // per_row)


def test_the_recorded_plan_round_trips_and_gather_rows_are_part_of_its_identity():
    plan = plan_shortlist(_offsets(30, 5), _offsets(40, 5), 8, memory_budget_bytes=20_000, concurrent_tiles=2)
    again = ShortlistPlan.from_dict(plan.to_dict())
    assert again == plan and again.same_tiles(plan)
    old = {k: v for k, v in plan.to_dict().items() if k != "gather_rows"}  # written before rows were gathered
    assert not ShortlistPlan.from_dict(old).same_tiles(plan)
