"""Built-in offline ``local`` generator: a tiny deterministic arranger and synthesiser.

Why it exists: people can try musicbuild, CI can run end to end, and editors get a temp
track, all without a network or an API key.  Numpy only, vectorised per note: each note is
rendered once from band-limited wavetables (cached, because loops repeat) and added into
the mix, so renders run hundreds of times faster than real time.  All randomness comes from
``numpy.random.default_rng`` seeded with ``seed`` and a sha256 of the words, so identical
arguments give identical bytes in any process (Python's salted ``hash()`` is never used).
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Sequence

import numpy as np

__all__ = ["synthesize", "describe"]

_T = 4096  # wavetable length (a power of two, so phases wrap with a bit mask)
_BLOCK = 8192  # samples per rendering block (temporaries below malloc's mmap threshold)
_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
_SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10)}
_ROLES = ("chords", "bass", "arp", "lead", "drums")
_ws = lambda text: frozenset(text.split())  # noqa: E731
_MINOR = _ws("dark sad tense melancholic melancholy horror mysterious mystery sinister ominous somber "
             "sombre eerie suspense suspenseful tragic gloomy haunting noir scary creepy lonely grief "
             "villain menacing dystopian epic dramatic cold")
_MAJOR = _ws("happy bright uplifting calm joyful cheerful sunny playful hopeful triumphant peaceful "
             "festive fun relaxing warm heroic summer carefree positive sweet whimsical")
_HIGH = _ws("energetic action battle upbeat intense fast driving dance edm techno chase fight hype "
            "powerful aggressive party workout boss racing heavy metal punk epic")
_LOW = _ws("calm ambient relaxing soft slow gentle peaceful chill lofi sleep meditation quiet dreamy "
           "lullaby minimal tender sad melancholic")
# style -> (trigger words, instruments for _ROLES, energy bias); dict order breaks ties
_STYLES: dict[str, tuple[frozenset[str], tuple[str | None, ...], float]] = {
    "orchestral": (_ws("orchestral orchestra string cinematic film epic violin cello symphonic trailer "
                       "classical fantasy adventure score"), ("strings", "cello", "pizz", "strings", "orch"), 0),
    "electronic": (_ws("synth electronic edm techno house trance synthwave dubstep cyberpunk electro "
                       "futuristic club retrowave electronica dance"),
                   ("pad", "synth_bass", "synth_pluck", "saw", "electronic"), 0.1),
    "ambient": (_ws("ambient drone meditation atmospheric sleep space ethereal soundscape"),
                ("pad", "sub", None, "bell", None), -0.2),
    "rock": (_ws("rock guitar metal punk grunge indie folk acoustic country"),
             ("pluck", "bass_guitar", None, "guitar_lead", "acoustic"), 0.1),
    "chiptune": (_ws("chiptune chip 8bit 16bit nes gameboy arcade pixel retro"),
                 ("square", "triangle", None, "square", "chip"), 0.1),
    "jazz": (_ws("jazz jazzy swing lounge bossa lofi smooth blues cafe"),
             ("epiano", "upright", None, "reed", "brush"), -0.05),
    "piano": (_ws("piano pianist ballad"), ("piano", "piano", None, "piano", "acoustic"), -0.1),
    "pop": (frozenset(), ("piano", "bass_guitar", None, "pluck", "acoustic"), 0),
}
_OVERRIDES = {**dict.fromkeys(("flute", "woodwind", "clarinet", "oboe", "whistle"), ("lead", "flute")),
              **dict.fromkeys(("sax", "saxophone"), ("lead", "reed")),
              **dict.fromkeys(("brass", "horn", "trumpet"), ("lead", "brass")),
              **dict.fromkeys(("bell", "celesta", "glockenspiel", "musicbox", "chime"), ("arp", "bell")),
              "harp": ("arp", "harp"), "piano": ("chords", "piano"), "guitar": ("chords", "pluck"),
              "organ": ("chords", "organ"), "choir": ("chords", "voice:a"), "pad": ("chords", "pad"),
              "string": ("chords", "strings"), "808": ("bass", "sub"), "sub": ("bass", "sub")}


def _saw(n: int, roll: float = 0.0) -> tuple[float, ...]:
    return tuple(math.exp(-roll * k) / k for k in range(1, n + 1))


@dataclass(frozen=True)
class _Inst:
    """A note recipe: a spectrum that relaxes from `bright` to `dull` (a cheap filter envelope),
    an amplitude envelope, stereo detune (chorus), vibrato, optional FM and breath noise."""

    bright: tuple[float, ...]
    dull: tuple[float, ...] = ()
    tone_decay: float = 0.0
    attack: float = 0.01
    amp_decay: float = 0.0  # 0 = held at full level, else decays towards `sustain`
    sustain: float = 0.0
    release: float = 0.08
    detune: float = 0.0  # cents between the left and right voice
    vibrato: float = 0.0  # cents
    fm: tuple[float, float] = (0.0, 0.0)  # (ratio, index) for bells and e-piano
    noise: float = 0.0
    gain: float = 1.0


_PLUCKED = tuple(a * abs(math.sin(math.pi * k * 0.22)) for k, a in enumerate(_saw(20), 1))
_INSTS = {
    "strings": _Inst(_saw(14, 0.08), attack=0.3, release=0.5, detune=9, vibrato=10, gain=0.45),
    "cello": _Inst(_saw(12, 0.1), attack=0.12, release=0.3, detune=6, vibrato=8, gain=0.6),
    "pizz": _Inst(_saw(10, 0.1), (1, 0.2), 0.08, 0.003, 0.25, release=0.05, gain=1.0),
    "brass": _Inst(_saw(18), _saw(5), 0.5, 0.06, 0.4, 0.8, 0.15, detune=5, vibrato=8, gain=0.55),
    "piano": _Inst(_saw(16, 0.12), (1, 0.3, 0.1), 0.35, 0.002, 1.1, release=0.2, gain=0.8),
    "epiano": _Inst((1,), (), 0.6, 0.003, 1.2, release=0.2, fm=(1.0, 1.4), gain=0.7),
    "bell": _Inst((1,), (), 0.8, 0.002, 1.6, release=0.3, fm=(3.5, 2.0), gain=0.8),
    "pluck": _Inst(_PLUCKED, (1, 0.3, 0.1), 0.12, 0.002, 0.8, release=0.08, detune=3, gain=0.7),
    "harp": _Inst(_saw(8, 0.3), (1, 0.15), 0.25, 0.002, 1.3, release=0.2, gain=0.8),
    "saw": _Inst(_saw(24), _saw(8, 0.1), 0.3, 0.01, 0.3, 0.75, 0.12, detune=10, vibrato=8, gain=0.5),
    "guitar_lead": _Inst(_saw(20, 0.05), _saw(10, 0.1), 0.6, 0.005, 0.8, 0.7, 0.1, 4, 18, gain=0.45),
    "synth_pluck": _Inst(_saw(20), (1, 0.4, 0.1), 0.08, 0.002, 0.22, release=0.06, detune=8, gain=0.6),
    "pad": _Inst(_saw(16, 0.1), (1, 0.5, 0.25, 0.12, 0.06), 1.5, 0.5, release=0.9, detune=14, vibrato=4,
                 gain=0.4),
    "square": _Inst((1, 0, 1 / 3, 0, 1 / 5, 0, 1 / 7, 0, 1 / 9, 0, 1 / 11, 0, 1 / 13), attack=0.002,
                    amp_decay=0.25, sustain=0.6, release=0.03, gain=0.35),
    "triangle": _Inst((1, 0, 1 / 9, 0, 1 / 25, 0, 1 / 49), attack=0.002, release=0.02, gain=0.6),
    "sub": _Inst((1, 0.12), attack=0.005, release=0.06, gain=0.6),
    "synth_bass": _Inst(_saw(12), (1, 0.35, 0.1), 0.12, 0.003, 0.4, 0.7, 0.05, gain=0.7),
    "bass_guitar": _Inst(_saw(8, 0.15), (1, 0.3), 0.25, 0.003, 1.2, 0.2, 0.06, gain=0.9),
    "upright": _Inst((1, 0.5, 0.25, 0.1), (1, 0.2), 0.15, 0.004, 0.7, release=0.08, gain=0.9),
    "flute": _Inst((1, 0.35, 0.12, 0.05, 0.02), attack=0.07, release=0.12, vibrato=15, noise=0.04),
    "reed": _Inst((1, 0.7, 0.55, 0.35, 0.3, 0.2, 0.12, 0.08), (1, 0.5, 0.3, 0.15), 0.4, 0.04,
                  release=0.1, vibrato=12, noise=0.015, gain=0.6),
    "organ": _Inst((1, 1, 0, 0.5, 0, 0.3, 0, 0.25), attack=0.01, release=0.08, detune=4, gain=0.35),
    "voice": _Inst((1,), attack=0.06, release=0.15, vibrato=25, noise=0.01, gain=0.6),  # spectrum: _vowel
}
_SUSTAINED = {"strings", "cello", "pad", "organ", "voice", "brass", "reed", "flute", "saw"}
_VOWELS = {"a": (730, 1090, 2440), "e": (530, 1840, 2480), "i": (270, 2290, 3010),
           "o": (570, 840, 2410), "u": (300, 870, 2240)}
_PROGS = {"major": ((0, 4, 5, 3), (0, 5, 3, 4), (0, 3, 0, 4), (5, 3, 0, 4), (0, 2, 3, 4), (3, 0, 4, 5)),
          "minor": ((0, 5, 2, 6), (0, 3, 4, 0), (0, 6, 5, 6), (0, 5, 3, 4), (0, 2, 5, 6), (0, 3, 6, 2)),
          "jazz": ((1, 4, 0, 0), (0, 5, 1, 4), (2, 5, 1, 4), (3, 4, 2, 5))}  # scale degrees, from 0
_COMP = (((0, 4),), ((0, 1.5), (1.5, 2.5)), ((0, 0.75), (0.75, 0.75), (1.5, 1), (2.5, 0.5), (3, 1)))
_JAZZ_COMP = (((0, 1), (1.5, 2.5)), ((0, 0.5), (2.5, 1.5)), ((1.5, 1), (3.5, 0.5)), ((0.5, 1), (2, 2)))
_CELLS = (((4, 4), (2, 2, 4), (6, 2), (3, 1, 4), (2, 6), (8,)),  # melody rhythms in eighths, by energy
          ((2, 2, 2, 2), (3, 1, 2, 2), (2, 1, 1, 4), (1, 1, 2, 4), (3, 3, 2), (2, 2, 4)),
          ((1, 1, 2, 1, 1, 2), (2, 1, 1, 2, 2), (1, 1, 1, 1, 2, 2), (3, 3, 2), (1, 1, 2, 2, 2)))
_O, _K = "." * 16, ("x.......x.......", "x.....x...x.....", "x.x...x.x.x..x..")
_S, _H = (_O[8:] + "x" + _O[9:], "....x.......x...", "....x.......x..."), ("x..." * 4, "x." * 8, "x" * 16)
_KITS: dict[str, list[tuple[str, float, float, tuple[str, ...]]]] = {  # (sample, gain, pan, level 0/1/2)
    "acoustic": [("kick", 1.0, 0.0, _K), ("snare", 0.7, 0.05, _S), ("hat", 0.5, 0.3, _H)],
    "electronic": [("kick", 1.1, 0.0, (_K[0],) + ("x..." * 4,) * 2), ("snare", 0.7, 0.0, (_O,) + _S[1:]),
                   ("hat", 0.45, 0.3, ("..x." * 4,) * 2 + ("xx.x" * 4,)),
                   ("ohat", 0.35, -0.3, (_O, _O, "..x." * 4))],
    "brush": [("kick", 0.5, 0.0, ("x" + _O[1:], _K[0], "x.....x...x.....")),
              ("brush", 0.6, 0.1, (_S[1], _S[1], "....x..x....x.x.")),
              ("ride", 0.5, -0.3, ("x...x.x.x...x.x.",) * 3), ("hat", 0.35, 0.3, (_S[1],) * 3)],
    "orch": [("timpani", 0.6, 0.0, ("x" + _O[1:], _K[0], "x..x..x.x..x..x.")),
             ("snare", 0.45, 0.1, (_O, _O, "....x.......x.xx"))],
    "chip": [("chip_kick", 0.9, 0.0, _K), ("chip_snare", 0.6, 0.0, _S), ("chip_hat", 0.35, 0.2, _H)],
}
_MIX = {"chords": (0.42, 0.0, 0.5), "bass": (0.5, 0.0, 0.0), "arp": (0.4, 0.35, 0.45),
        "lead": (0.8, -0.12, 0.35), "voice": (0.8, 0.0, 0.4)}  # role -> (gain, pan, reverb send)


def _plan(prompt: str, tags: Sequence[str], bpm: float | None) -> dict[str, Any]:
    """Every musical decision that follows from the words alone (no seed)."""
    tags = tuple(map(str, tags or ()))
    text = " ".join([prompt or "", *tags]).lower()
    words = set(re.findall(r"[a-z0-9#]+", re.sub(r"[-_ ](?=(bit|fi)\b)", "", text)))  # 8-bit, lo-fi
    words |= {w[:-1] for w in words if len(w) > 3 and w.endswith("s")}  # strings -> string
    ident = repr(((prompt or "").strip().lower(), sorted(t.lower() for t in tags)))
    digest = hashlib.sha256(ident.encode()).digest()
    style = max(_STYLES, key=lambda s: len(_STYLES[s][0] & words))
    style = style if _STYLES[style][0] & words else "pop"
    roles = list(_STYLES[style][1])
    for word, (role, inst) in _OVERRIDES.items():
        if word in words and word not in _STYLES[style][0]:
            roles[_ROLES.index(role)] = inst
    energy = 0.5 + 0.17 * (len(words & _HIGH) - len(words & _LOW)) + _STYLES[style][2]
    energy = round(min(1.0, max(0.1, energy)), 2)
    if style == "orchestral" and energy >= 0.65 and roles[3] == "strings":
        roles[3] = "brass"
    if re.search(r"\bno (drums|percussion|beat)", text) or energy < {"piano": 0.6, "orchestral": 0.3}.get(style, 0):
        roles[4] = None  # calm piano / orchestral cues sound better without a kit
    score = len(words & _MINOR) - len(words & _MAJOR)
    mode = "minor" if score > 0 or (score == 0 and digest[0] & 1) else "major"
    root = digest[1] % 12
    if key := re.search(r"\b(?:in|key of)\s+([a-g])(#|b| sharp| flat)?[ -]?(major|minor)\b", text):
        root = ("c", "", "d", "", "e", "f", "", "g", "", "a", "", "b").index(key[1])
        root, mode = (root + (1 if key[2] in ("#", " sharp") else -1 if key[2] else 0)) % 12, key[3]
    return {"key": f"{_NAMES[root]} {mode}", "root": _NAMES[root], "mode": mode,
            "bpm": min(300.0, max(30.0, float(bpm) if bpm else float(round(62 + 70 * energy)))),
            "energy": energy, "style": style, "instruments": dict(zip(_ROLES, roles)), "drums": roles[4] is not None,
            "swing": style == "jazz" or bool(words & {"swing", "shuffle"}),
            "sevenths": style == "jazz" or bool(words & {"neosoul", "soul", "rnb"}),
            "bars_per_chord": 2 if style == "ambient" else 1, "_digest": digest, "_root": root}


def describe(prompt: str, tags: Sequence[str] = (), bpm: float | None = None) -> dict[str, Any]:
    """The musical decisions the local generator makes for these words (no audio rendered)."""
    return {k: v for k, v in _plan(prompt, tags, bpm).items() if not k.startswith("_")}


@lru_cache(maxsize=512)
def _table(amps: tuple[float, ...]) -> np.ndarray:
    """One band-limited cycle with the given harmonic amplitudes, peak-normalised, read-only."""
    tab = np.asarray(amps) @ np.sin(2 * np.pi * np.arange(1, len(amps) + 1)[:, None] * np.arange(_T) / _T)
    tab = (tab / max(np.abs(tab).max(), 1e-9)).astype(np.float32)
    tab.flags.writeable = False  # shared between songs and threads
    return tab


_SINE = _table((1.0,))


def _vowel(vowel: str, f0: float) -> tuple[float, ...]:
    """Harmonic amplitudes of a sung vowel: a 1/sqrt(k) source shaped by three formants."""
    fk = np.arange(1, max(2, int(4000 / f0)) + 1) * f0
    amp = sum(g / (1 + ((fk - f) / (60 + 0.06 * f)) ** 2) for g, f in zip((1, 0.5, 0.25), _VOWELS[vowel]))
    return tuple(np.round((amp + 0.03) / np.sqrt(fk / f0), 4).tolist())


@lru_cache(maxsize=4)
def _samples(sr: int) -> dict[str, np.ndarray]:
    """Drum one-shots and a breath-noise bank, from a fixed seed so they never vary."""
    rng = np.random.default_rng(20240601)
    t = {d: np.arange(int(d * sr)) / sr for d in (0.08, 0.3, 0.4, 0.45, 0.8, 1.2, 1.8)}
    nz = {d: rng.standard_normal(len(v)) for d, v in t.items()}
    hp = lambda x: np.diff(x, prepend=0.0)  # noqa: E731 - first difference: a cheap high-pass
    crush = lambda x, m: np.repeat(np.sign(x[::m]), m)[: len(x)]  # noqa: E731 - 8-bit noise
    tk, ts, tt, tr = t[0.45], t[0.3], t[1.2], t[0.8]
    kick = np.sin(2 * np.pi * np.cumsum(48 + 110 * np.exp(-tk / 0.035)) / sr) * np.exp(-tk / 0.18)
    kick[:200] += nz[0.45][:200] * np.exp(-tk[:200] / 0.002) * 0.3
    breath = np.convolve(rng.standard_normal(sr * 4), np.ones(6) / 6, "same")
    out = {"kick": kick, "breath": breath / np.abs(breath).max(),
           "snare": 0.5 * np.sin(2 * np.pi * 185 * ts) * np.exp(-ts / 0.045) + 0.45 * hp(nz[0.3]) * np.exp(-ts / 0.1),
           "hat": 0.22 * hp(hp(nz[0.08])) * np.exp(-t[0.08] / 0.018),
           "ohat": 0.18 * hp(hp(nz[0.4])) * np.exp(-t[0.4] / 0.15),
           "crash": 0.25 * hp(nz[1.8]) * np.exp(-t[1.8] / 0.6),
           "ride": (0.12 * hp(nz[0.8]) + 0.06 * np.sin(2 * np.pi * np.outer(tr, (3150, 4720))).sum(1))
           * np.exp(-tr / 0.35),
           "brush": 0.25 * (nz[0.3] + np.roll(nz[0.3], 1)) * np.exp(-ts / 0.12),
           "timpani": (np.sin(2 * np.pi * 62 * tt) + 0.3 * np.sin(2 * np.pi * 95 * tt)) * np.exp(-tt / 0.7),
           "chip_kick": 0.6 * np.sign(kick) * np.exp(-tk / 0.12),
           "chip_snare": 0.4 * crush(nz[0.3], 6) * np.exp(-ts / 0.07),
           "chip_hat": 0.2 * crush(nz[0.08], 2) * np.exp(-t[0.08] / 0.02)}
    out = {k: v.astype(np.float32) for k, v in out.items()}
    for v in out.values():
        v.flags.writeable = False
    return out


def _reverb(send: np.ndarray, sr: int, t60: float, out: np.ndarray, wet: float) -> None:
    """Schroeder-style room added into `out` (2, n): four damped feedback combs
    y[n] = x[n] + g*lowpass(y[n-d]), each computed a whole delay line at a time (a block depends
    only on the previous block), so the Python loop runs n/d times, not n."""
    buf = np.empty(len(send) + 2 * sr // 25, np.float32)  # one scratch: fresh pages are costly
    for j, d in enumerate((1557, 1617, 1491, 1422)):
        d, n = max(1, int(d * sr / 44100)), len(send)
        g, m = 10 ** (-3 * d / (sr * t60)), -(-n // d)
        buf[:n], buf[n : m * d] = send, 0
        rows = buf[: m * d].reshape(m, d)
        for i in range(1, m):
            prev = rows[i - 1]
            rows[i, 0] += g * prev[0]
            rows[i, 1:] += (0.5 * g) * (prev[1:] + prev[:-1])
        c = buf[:n]
        c *= np.float32(wet)
        out[0] += c
        (np.add if j % 2 == 0 else np.subtract)(out[1], c, out=out[1])  # alternating signs: width


class _Song:
    """Arranges one track bar by bar and renders notes straight into a stereo buffer."""

    def __init__(self, plan: dict[str, Any], rng: np.random.Generator, n: int, sr: int) -> None:
        self.p, self.rng, self.n, self.sr, self.tonic = plan, rng, n, sr, plan["_root"]
        self.spb, self.scale = 60.0 / plan["bpm"], _SCALES[plan["mode"]]
        self.dry = np.zeros((2, n), np.float32)  # channel-first: each row is contiguous
        self.send, self.tmp = np.zeros(n, np.float32), np.empty(0, np.float32)
        self.cache: dict[tuple[str, int, int], np.ndarray] = {}

    def semis(self, degree: int) -> int:
        return 12 * (degree // 7) + self.scale[degree % 7]

    def chord(self, degree: int) -> list[int]:
        """Diatonic triad (or seventh) as semitones above the tonic; minor keys get a major V."""
        tones = [self.semis(degree + 2 * i) for i in range(4 if self.p["sevenths"] else 3)]
        tones[1] += self.p["mode"] == "minor" and degree % 7 == 4
        return tones

    def note(self, name: str, midi: int, n_on: int) -> np.ndarray:
        """Render (or fetch from the per-song cache) one note as float32 (2, samples), release
        included.  Rendered in blocks of _BLOCK samples: the temporaries stay small enough to be
        reused by malloc and stay in cache (multi-MB temporaries cost a page fault per 4 KB)."""
        if (name, midi, n_on) in self.cache:
            return self.cache[name, midi, n_on]
        base, _, vowel = name.partition(":")
        ins, sr, f = _INSTS[base], self.sr, 440.0 * 2 ** ((midi - 69) / 12)
        n = n_on + int(ins.release * sr)
        nh = max(1, int(0.45 * sr / f))  # band limit: no harmonic above ~0.45 sr
        tb = _table((_vowel(vowel, f) if vowel else ins.bright)[:nh])
        td = _table(ins.dull[:nh]) if ins.dull else None
        fcs = [f * 2 ** (c / 1200) * _T for c in ((-ins.detune / 2, ins.detune / 2) if ins.detune else (0,))]
        t_end, rel, out = n / sr, max(n - n_on, 1) / sr, np.empty((2, n), np.float32)
        for s0 in range(0, n, _BLOCK):
            t = np.arange(s0, min(n, s0 + _BLOCK), dtype=np.float64) * (1 / sr)  # float64 for phase
            t32, seg = t.astype(np.float32), out[:, s0 : s0 + _BLOCK]
            env = np.minimum(t32 * np.float32(1 / ins.attack), 1) * np.clip((t_end - t32) * np.float32(1 / rel), 0, 1)
            env *= np.float32(ins.gain)
            if ins.amp_decay:
                env *= ins.sustain + (1 - ins.sustain) * np.exp(t32 * np.float32(-1 / ins.amp_decay))
            fade = np.exp(t32 * np.float32(-1 / ins.tone_decay)) if ins.tone_decay else np.float32(1)
            pm: Any = 0.0  # phase offset in table steps
            if ins.vibrato:  # phase modulation worth +-vibrato cents at 5.5 Hz, eased in
                depth = np.float32(f * ins.vibrato / 1731 / (2 * np.pi * 5.5) * _T)
                pm = depth * np.sin(t32 * np.float32(2 * np.pi * 5.5)) * np.minimum(t32 * np.float32(2.5), 1)
            for c, fc in enumerate(fcs):
                if ins.fm[1]:  # FM (phase modulation) from the sine table: cheaper than float64 sin
                    mod = _SINE[(t * (fc * ins.fm[0])).astype(np.int32) & (_T - 1)]
                    mod *= fade * np.float32(ins.fm[1] * min(1.0, 800 / f) * _T / (2 * np.pi))
                    w = _SINE[(t * fc + (mod + pm)).astype(np.int32) & (_T - 1)]
                else:
                    idx = (t * fc + pm).astype(np.int32) & (_T - 1)
                    w = tb[idx]
                    if td is not None:
                        dull = td[idx]
                        w = dull + fade * (w - dull)
                np.multiply(w, env, out=seg[c])
            if len(fcs) > 1:  # blend the voices a little: chorus in each channel, less phasey in mono
                left = seg[0] + np.float32(0.4) * seg[1]
                seg[1] += np.float32(0.4) * seg[0]
                seg[0] = left
            else:
                seg[1] = seg[0]
            if ins.noise:
                breath = _samples(sr)["breath"]
                seg += np.float32(ins.noise) * env * breath[np.arange(s0, s0 + len(t)) % len(breath)]
        self.cache[name, midi, n_on] = out
        return out

    def add(self, wave: np.ndarray, sec: float, gain: float, pan: float, send: float) -> None:
        """Mix a note (2, n) or hit (n,) into the dry bus (constant-power pan) and reverb send."""
        i = max(0, int(round(sec * self.sr)))
        w = wave[..., : max(0, self.n - i)]
        if not (m := w.shape[-1]):
            return
        if len(self.tmp) < m:  # reused scratch: big temporaries would be fresh mmaps each time
            self.tmp = np.empty(m, np.float32)
        tmp, a, rows = self.tmp[:m], (pan + 1) * np.pi / 4, (w[0], w[1]) if w.ndim == 2 else (w, w)
        for c, g in enumerate((math.cos(a), math.sin(a))):
            self.dry[c, i : i + m] += np.multiply(rows[c], np.float32(g * gain * 1.41), out=tmp)
        if send:
            self.send[i : i + m] += np.multiply(rows[0], np.float32(gain * send), out=tmp)

    def sec(self, beat: float) -> float:
        """Beat -> seconds; swing delays every off-beat eighth to the triplet position."""
        if self.p["swing"]:
            b, fr = divmod(beat, 1.0)
            beat = b + (fr * 4 / 3 if fr < 0.5 else 2 / 3 + (fr - 0.5) * 2 / 3)
        return beat * self.spb

    def play(self, role: str, name: str, beat: float, beats: float, midi: int, vel: float = 1.0) -> None:
        """Place a note; struck instruments get +-4 ms of timing jitter so loops feel played."""
        sec = self.sec(beat) + (0.0 if name in _SUSTAINED else float(self.rng.normal(0, 0.004)))
        gain, pan, send = _MIX[role]
        self.add(self.note(name, midi, max(1, round(beats * self.spb * self.sr))), sec, gain * vel, pan, send)

    def motif(self, prog: tuple[int, ...], bpc: int, level: int, keep: list | None = None) -> list[list]:
        """A phrase of melody, per bar [(onset beat, beats, scale degree)]: a seeded random walk
        snapped to chord tones on strong beats, ending long on the chord root.  With `keep`,
        only the last bar is new (the answering phrase of an A A' pair)."""
        bars, cur, rng = (keep or [])[: 4 * bpc - 1], int(self.rng.integers(2, 5)), self.rng
        for i in range(len(bars), 4 * bpc):
            last, pos, notes, chord = i == 4 * bpc - 1, 0, [], prog[i // bpc]
            cells = _CELLS[0 if last else level]
            cell = cells[int(rng.integers(len(cells)))]
            for j, ln in enumerate(cell):
                cur += int(rng.choice((-2, -1, -1, 0, 1, 1, 2, 3, -3)))
                cur = -cur if cur < -1 else 18 - cur if cur > 9 else cur
                end = last and j == len(cell) - 1
                if pos % 4 == 0 or end:
                    tones = (chord,) if end else (chord, chord + 2, chord + 4)
                    cur = min((t + 7 * o for t in tones for o in range(-2, 3)), key=lambda d: (abs(d - cur), d))
                if pos % 4 == 0 or rng.random() > 0.12:  # occasional rests off the beat
                    notes.append((pos / 2, ln / 2, cur))
                pos += ln
            bars.append(notes)
        return bars

    def voicing(self, chord: list[int], prev: list[int] | None, center: int) -> list[int]:
        """The inversion (lowest note in E3..D#4) with the smoothest voice leading from `prev`."""
        pcs, cands = [(self.tonic + c) % 12 for c in chord], []
        for r in range(len(pcs)):
            notes = [52 + (pcs[r] - 52) % 12]
            for pc in pcs[r + 1 :] + pcs[:r]:
                notes.append(notes[-1] + (pc - notes[-1]) % 12)
            cands.append(notes)
        if prev is None:
            return min(cands, key=lambda c: abs(sum(c) / len(c) - center))
        return min(cands, key=lambda c: sum(abs(a - b) for a, b in zip(c, sorted(prev))))

    def chords_bar(self, name: str, bar: int, new: bool, bpc: int, level: int, voices: list[int]) -> None:
        """Held chords for bowed/blown/pad sounds; rhythmic comping (strummed on guitar, jazz
        syncopation on e-piano); broken chords for calm piano/harp and fast chiptune arps."""
        base = name.partition(":")[0]
        if base in _SUSTAINED:
            for m in voices if new else ():
                self.play("chords", name, bar * 4, 4 * bpc, m, 0.8)
        elif base == "square" or (base in ("piano", "harp") and level == 0):
            self.arp_bar(name, bar, voices, 2 if base == "square" else 1, 0, role="chords")
        else:
            hits = _JAZZ_COMP[int(self.rng.integers(4))] if base == "epiano" else _COMP[level]
            hits = tuple((i / 2, 0.5) for i in range(8)) if base == "pluck" and level == 2 else hits
            for k, (beat, beats) in enumerate(hits):
                for j, m in enumerate(voices if k % 2 == 0 or base != "pluck" else voices[::-1]):
                    stagger = 0.012 * j / self.spb if base == "pluck" else 0.0
                    self.play("chords", name, bar * 4 + beat + stagger, beats, m, 0.9 if k == 0 else 0.7)

    def bass_bar(self, name: str, bar: int, chord: list[int], level: int, nxt: list[int], hold: int) -> None:
        """Bass by style and energy: held roots, pop syncopation, 8ths, EDM off-beats, walking."""
        root, style = 33 + (self.tonic + chord[0] - 9) % 12, self.p["style"]
        if style == "jazz" and level >= 1:
            target = 33 + (self.tonic + nxt[0] - 9) % 12
            notes = [(0, 1, root), (1, 1, root + chord[1] - chord[0]), (2, 1, root + chord[2] - chord[0]),
                     (3, 1, target + (1 if target < root + 7 else -1))]  # chromatic approach
        elif style == "electronic" and level == 2:
            notes = [(i + 0.5, 0.45, root) for i in range(4)] + [(0, 0.45, root)]
        elif style in ("rock", "chiptune") and level >= 1:
            notes = [(i / 2, 0.45, root + (12 if style == "chiptune" and i % 2 else 0)) for i in range(8)]
        elif level == 0 or style in ("ambient", "orchestral"):
            notes = [(0, hold, root)] * bool(hold) if level < 2 else [(0, 2, root), (2, 2, root)]
        else:
            notes = [(0, 1.5, root), (1.5, 1.0, root), (2.5, 1.5, root + 7)]
        for beat, beats, m in notes:
            self.play("bass", name, bar * 4 + beat, beats, m)

    def arp_bar(self, name: str, bar: int, voices: list[int], level: int, shape: int, role: str = "arp") -> None:
        tones = sorted(voices) + [v + 12 for v in sorted(voices)]
        order = (tones, tones + tones[-2:0:-1], tones[::2] + tones[1::2])[shape]
        step = (1.0, 0.5, 0.25)[level]
        for i in range(int(4 / step)):
            self.play(role, name, bar * 4 + i * step, step * 1.5, order[i % len(order)], 0.7 + 0.2 * (i % 4 == 0))

    def drums(self, bar: int, level: int, fill: bool, crash: bool) -> None:
        """One bar of the kit's pattern for this energy level: accents, humanised velocity,
        a snare fill into the next phrase and a crash on phrase starts."""
        kit = self.p["instruments"]["drums"]
        hits = [("crash", 0, 0.6, -0.2)] * (crash and kit != "brush")
        for sample, gain, pan, pats in _KITS[kit]:
            pat = pats[level]
            pat = pat[:12] + "xxxx" if fill and sample in ("snare", "timpani", "chip_snare") else pat
            for step in (s for s, c in enumerate(pat) if c == "x"):
                accent = 1.0 if step % 4 == 0 else 0.8 if step % 2 == 0 else 0.62
                vel = accent * (1 + 0.06 * self.rng.standard_normal())
                if fill and step >= 12 and "kick" not in sample:
                    vel = 0.55 + 0.12 * (step - 12)
                hits.append((sample, step / 4, gain * vel, pan))
        for sample, beat, gain, pan in hits:
            send = 0 if "kick" in sample else 0.15
            self.add(_samples(self.sr)[sample], self.sec(bar * 4 + beat), gain * 0.8, pan, send)

    def arrange(self, vowels: list[str]) -> None:
        """Form: 4-chord phrases in A A' B A order, a thinner 4-bar intro (no lead) and outro,
        a lift on B sections; energy sets the level (0-2) of every part's pattern."""
        p, rng, ins = self.p, self.rng, self.p["instruments"]
        bpc = p["bars_per_chord"]
        plen, n_bars = 4 * bpc, max(1, math.ceil(self.n / self.sr / (4 * self.spb)))
        pool = _PROGS[p["mode"]] + (_PROGS["jazz"] if p["sevenths"] else ())
        progs = [pool[int(i)] for i in rng.choice(len(pool), 2, replace=False)]
        base = 0 if p["energy"] < 0.35 else 1 if p["energy"] < 0.65 else 2
        motifs = [self.motif(progs[0], bpc, base), [], self.motif(progs[1], bpc, base)]
        motifs[1] = self.motif(progs[0], bpc, base, keep=motifs[0])
        lead_base = 60 + (self.tonic if self.tonic < 8 else self.tonic - 12)
        shape, prev, sung, center = int(rng.integers(3)), None, 0, 58 + int(rng.integers(0, 6))
        for bar in range(n_bars):
            phrase, bi = divmod(bar, plen)
            form = (0, 1, 2, 0)[phrase % 4]
            prog = progs[1 if form == 2 else 0]
            chord = self.chord(prog[bi // bpc])
            intro, outro = n_bars >= 8 and bar < 4, n_bars >= 16 and bar >= n_bars - 4
            level = min(2, max(0, base - 1 if intro or outro else base + 1 if form == 2 and base >= 1 else base))
            if bi % bpc == 0:
                prev = self.voicing(chord, prev, center)
            self.chords_bar(ins["chords"], bar, bi % bpc == 0, bpc, level, prev)
            nxt = self.chord(prog[(bi // bpc + 1) % 4])
            self.bass_bar(ins["bass"], bar, chord, level, nxt, 4 * bpc * (bi % bpc == 0))
            if ins["arp"] and (not intro or n_bars < 8):
                self.arp_bar(ins["arp"], bar, prev, level, shape)
            for beat, beats, deg in motifs[form][bi] if not intro or n_bars < 8 else ():
                midi = lead_base + self.semis(deg)
                shift = 12 if ins["lead"] == "square" else 0
                self.play("lead", ins["lead"], bar * 4 + beat, beats * 0.95, midi + shift, 0.4 if vowels else 1.0)
                if vowels:  # one syllable per melody note, cycling through the lyrics' vowels
                    vowel, sung = vowels[sung % len(vowels)], sung + 1
                    self.play("voice", f"voice:{vowel}", bar * 4 + beat, beats * 0.95, midi - 12 * (lead_base > 60))
            if ins["drums"] and not (intro and n_bars >= 12):
                fill = bi == plen - 1 and level >= 1 and (rng.random() < 0.5 or (phrase + 1) % 4 == 2)
                self.drums(bar, level, fill, bi == 0 and phrase > 0 and (level == 2 or form == 2))

    def master(self) -> np.ndarray:
        """Reverb, fades, gentle tanh saturation and normalisation (louder for energetic specs)."""
        sr, e, out = self.sr, self.p["energy"], self.dry
        _reverb(self.send, sr, 1.2 + 2.0 * (1 - e) + 2.0 * (self.p["style"] == "ambient"), out, 0.2 * (2 - e))
        del self.send  # frees memory before the final copy on long renders
        dur = self.n / sr
        for n_f, view in ((int(min(1.5, 0.08 * dur) * sr), out), (int(min(4.0, 0.2 * dur) * sr), out[:, ::-1])):
            if n_f > 1:  # sin^2 fades; the reversed view fades the tail
                view[:, :n_f] *= np.sin(np.linspace(0, np.pi / 2, n_f, dtype=np.float32)) ** 2
        if (peak := max(float(out.max()), -float(out.min()))) > 0:
            out *= np.float32(1.3 / peak)
            np.tanh(out, out=out)
            out *= np.float32((0.8 + 0.15 * e) / math.tanh(1.3))
        return np.ascontiguousarray(np.clip(out, -0.98, 0.98, out=out).T)


def synthesize(*, prompt: str, tags: Sequence[str] = (), bpm: float | None = None,
               duration: float, seed: int, instrumental: bool = True,
               lyrics: str | None = None, sample_rate: int = 44100) -> np.ndarray:
    """Render a deterministic stereo temp track: float32 ``(round(duration*sr), 2)``, peak <= 0.98."""
    if not math.isfinite(duration) or duration <= 0:
        raise ValueError(f"duration must be a positive number of seconds, got {duration!r}")
    plan, sr = _plan(prompt, tags, bpm), int(sample_rate)
    rng = np.random.default_rng([int(seed) % 2**64, int.from_bytes(plan["_digest"][:8], "big")])
    song = _Song(plan, rng, max(1, round(duration * sr)), sr)
    vowels = re.findall(r"[aeiou]", (lyrics or "").lower().replace("y", "i")) if not instrumental else []
    song.arrange(vowels or (["a"] if not instrumental and lyrics and lyrics.strip() else []))
    return song.master()
