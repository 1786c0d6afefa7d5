"""Found with the fuzz job's inputs grown large (the ``mime`` harness's parameter seeds
repeated, beyond atheris' 4096-octet inputs): RFC 2231 continuations were joined in quadratic
time, because the first section's number was looked up again for every section, so one
Content-Type of 20,000 ``name*N*=`` sections (200 KB of folded header, which DATA accepts)
took seconds of CPU at delivery. The tests bound the work, not the time."""

from __future__ import annotations

from mailserver.message import mime


class _CountingSections(dict):
    """The sections of one parameter, counting how often they are walked."""

    walks = 0

    def __iter__(self):
        type(self).walks += 1
        return super().__iter__()


def test_sections_are_walked_a_constant_number_of_times():
    """Joining N continuation sections walks them a fixed number of times, not once per
    section."""
    for count in (10, 1000):
        sections = _CountingSections({i: ("%41", True) for i in range(count)})
        _CountingSections.walks = 0
        assert mime._decode_2231(sections) == "A" * count
        assert _CountingSections.walks <= 2, (count, _CountingSections.walks)


def test_many_sections_still_decode():
    """A Content-Type with 20,000 sections parses; sections past 10,000 are ignored, so the
    name holds 10,001 characters."""
    data = b"Content-Type: text/plain" + b"".join(b"; n*%d*=%%41" % i for i in range(20_000))
    parsed = mime.parse(data + b"\r\n\r\nbody")
    assert parsed.bodystructure["params"]["n"] == "A" * 10_001
