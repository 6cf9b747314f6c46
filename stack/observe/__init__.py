"""Observing runs: pcap captures, JSON-lines traces and ladder diagrams of a connection's close."""

from stack.observe.ladder import (
    KERNEL_TO_STACK,
    STACK_TO_KERNEL,
    LadderEntry,
    LadderMark,
    entries_from_segments,
    marks_from_states,
    render_text,
    segments_from_packets,
)
from stack.observe.ladder_svg import render_svg
from stack.observe.pcap import LINKTYPE_RAW, PcapFormatError, PcapReader, PcapWriter, read_pcap
from stack.observe.trace import SCHEMA, TraceWriter, read_trace, validate_record

__all__ = [
    "KERNEL_TO_STACK",
    "LINKTYPE_RAW",
    "SCHEMA",
    "STACK_TO_KERNEL",
    "LadderEntry",
    "LadderMark",
    "PcapFormatError",
    "PcapReader",
    "PcapWriter",
    "TraceWriter",
    "entries_from_segments",
    "marks_from_states",
    "read_pcap",
    "read_trace",
    "render_svg",
    "render_text",
    "segments_from_packets",
    "validate_record",
]
