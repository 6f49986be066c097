"""CoreShare: a batch alone on the node takes every core, one beside another keeps its share."""

from __future__ import annotations

from adapter_manager.core_share import CoreShare


def test_a_batch_alone_takes_every_core_and_one_beside_another_keeps_its_share(tmp_path):
    first, second = CoreShare(7, 1, 2, tmp_path), CoreShare(7, 1, 2, tmp_path)  # two instances of one server
    assert first.enter() == 2
    assert second.enter() == 1  # the first is computing
    first.leave()
    assert first.enter() == 1  # the second still is
    second.leave()
    first.leave()
    assert second.enter() == 2  # nobody else now
    second.leave()
    first.close()
    second.close()
    assert not list(tmp_path.iterdir())


def test_instances_of_another_server_do_not_count(tmp_path):
    mine, theirs = CoreShare(7, 1, 4, tmp_path), CoreShare(8, 1, 4, tmp_path)
    assert theirs.enter() == 4
    assert mine.enter() == 4
    mine.leave()
    theirs.leave()
