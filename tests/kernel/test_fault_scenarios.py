"""The eight fault scenarios against the Linux kernel (examples/fault_scenarios.py), asserted."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from tests.kernel.conftest import requires_kernel_link

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))
import fault_scenarios as fs

pytestmark = [requires_kernel_link, pytest.mark.kernel]


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(asyncio.wait_for(coro, 120))


def test_1_lost_final_ack_is_repaired_by_time_wait() -> None:
    r = run(fs.lost_final_ack())
    assert len(r["dropped"]) == 1 and r["dropped"][0][:2] == ("drop", "out")
    assert r["kernel_fins"] >= 2  # the kernel retransmitted its FIN from LAST-ACK
    assert r["kernel_state"] is None  # ... got its ACK from TIME-WAIT and reached CLOSED
    assert r["time_wait_restarted_by"] > 0  # 2MSL restarted by the retransmitted FIN
    assert r["stack_path"][-1] == "TIME-WAIT"


def test_2_kernel_fin_lost_once() -> None:
    r = run(fs.kernel_fin_lost())
    assert r["dropped"] == 1 and r["fins_received"] >= 1
    assert r["stack_path"][-3:] == ["CLOSE-WAIT", "LAST-ACK", "CLOSED"] and r["kernel_state"] == "TIME-WAIT"


def test_3_stack_fin_lost_four_times() -> None:
    r = run(fs.stack_fin_lost(4))
    assert r["fin_drops"] == 4 and r["same_seq"]
    assert r["loss_probes"] == 1  # the first resend: a tail loss probe
    assert r["backoff_gaps"][2] > 1.5 * r["backoff_gaps"][1]  # then the RTO, with exponential backoff
    assert r["kernel_states_seen"] == ["ESTAB", "CLOSE-WAIT"]  # ESTABLISHED until one got through
    assert r["stack_path"][-2:] == ["FIN-WAIT-1", "FIN-WAIT-2"]


def test_3b_every_fin_lost_times_out_silently() -> None:
    r = run(fs.stack_fin_lost(None))
    assert r["fin_drops"] == 5 and r["same_seq"]  # the first send, one probe, orphan_retries=3
    assert r["stack_path"][-1] == "CLOSED" and r["last_cause"] == "retransmissions exhausted"
    assert r["rst_sent"] == 0 and r["timeouts"] == 1 and r["kernel_state_after"] == "ESTAB"
    assert r["kernel_saw"] == "ECONNRESET"  # the stack's answer to data for no connection


def test_4_fin_reordered_ahead_of_data() -> None:
    r = run(fs.fin_ahead_of_data())
    assert r["arrival_order"][:3] == ["first ", "FIN", "last"]
    assert r["delivered"] == "first last"


def test_5_duplicates_deliver_once() -> None:
    r = run(fs.duplicate_everything())
    assert r["intact"] and r["duplicated"] > 100


def test_6_ten_percent_loss_many_connections() -> None:
    r = run(fs.lossy_many())
    assert r["intact"] == r["connections"] == 100 and r["open_left"] == 0 and r["dropped"] > 0


def test_7_corruption_counted_and_repaired() -> None:
    r = run(fs.corruption())
    assert r["intact"] and r["corrupted"] > 0 and r["InCsumErrors"] == r["corrupted"]


@pytest.mark.parametrize("rfc1337", [False, True])
def test_8_rst_into_time_wait_like_the_kernel(rfc1337: bool) -> None:
    r = run(fs.rst_into_time_wait(rfc1337))
    assert r["stack_time_wait_left"] == r["kernel_time_wait_left"] == (1 if rfc1337 else 0)
