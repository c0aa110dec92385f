"""How long a piece of audio is, from its bytes (headers first, a full decode only as a fallback).

Hosted services bill by the length of what they delivered, which is not always what was asked
for; this is how the delivered length is measured when the service does not state it.
"""
from __future__ import annotations

import io


def audio_seconds(data: bytes) -> float:
    """Duration in seconds of an encoded audio file (wav, flac, ogg, mp3, m4a)."""
    import soundfile as sf

    try:
        info = sf.info(io.BytesIO(data))
        if info.frames > 0 and info.samplerate > 0:
            return info.frames / info.samplerate
    except (RuntimeError, sf.LibsndfileError, ValueError):
        pass
    import av

    with av.open(io.BytesIO(data)) as container:
        if container.duration:
            return container.duration / 1_000_000
        stream = container.streams.audio[0]
        frames = sum(frame.samples for frame in container.decode(stream))
        return frames / (stream.rate or 1)
