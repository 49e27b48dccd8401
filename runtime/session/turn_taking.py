"""The spec's ``turn_handling`` and ``background_audio`` on livekit's own objects:
``AgentSession(turn_handling=...)`` and ``BackgroundAudioPlayer`` (in a room it
publishes its own track; without one, its mixed frames go to the caller's
``background`` sink, see ``core.livekit_compat.roomless_background_player_class``)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..spec.turn_taking import BackgroundAudio, Sound

log = logging.getLogger("voice_runtime.build")


def merge_turn_handling(base: dict[str, Any], spec: Any) -> dict[str, Any]:
    """``base`` (livekit TurnHandlingOptions) with the spec's ``turn_handling`` keys
    over it, block by block."""
    block = getattr(spec, "turn_handling", None)
    if block is None:
        return base
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    for key, value in block.options().items():
        out[key] = {**out.get(key, {}), **value}
    return out


# what livekit 1.8.9 takes from an Agent's own turn_handling (voice/agent.py and
# agent_activity.py): endpointing, preemptive generation and whether and how barge-in is
# detected; the rest of `interruption` (durations, thresholds, false-interruption
# timeout) is read from the session only
_AGENT_INTERRUPTION_KEYS = ("enabled", "mode")


def agent_turn_handling(base: dict[str, Any], spec: Any) -> dict[str, Any]:
    """``base`` (an Agent's TurnHandlingOptions) with the spec's ``turn_handling`` keys
    that livekit applies per agent: how a handoff target takes turns."""
    out = dict(base)
    for key, value in merge_turn_handling({}, spec).items():
        if key == "interruption":
            value = {k: v for k, v in value.items() if k in _AGENT_INTERRUPTION_KEYS}
        if value:
            out[key] = value
    return out


def _audio_config(sound: Sound, folder: Path) -> Any:
    from livekit.agents.voice.background_audio import AudioConfig, BuiltinAudioClip

    if sound.clip is not None:
        clips = {c.value.removesuffix(".ogg").replace("_", "-"): c for c in BuiltinAudioClip}
        return AudioConfig(clips[sound.clip], volume=sound.volume)
    return AudioConfig(str((folder / str(sound.file)).resolve()), volume=sound.volume)


async def start_background(background: BackgroundAudio | None, folder: Path, session: Any, room: Any,
                           sink: Callable[[Any], None] | None) -> Any:
    """Start livekit's BackgroundAudioPlayer for the call, or return None when the
    spec has none or the call has nowhere to play it."""
    if background is None or (background.ambient is None and background.thinking is None):
        return None
    kwargs = {key: _audio_config(sound, folder) for key, sound in
              (("ambient_sound", background.ambient), ("thinking_sound", background.thinking)) if sound is not None}
    if room is not None:
        from livekit.agents import BackgroundAudioPlayer

        player = BackgroundAudioPlayer(**kwargs)
    elif sink is not None:
        from ..core.livekit_compat import roomless_background_player_class

        player = roomless_background_player_class()(sink, **kwargs)
    else:
        log.info("background_audio is played in a LiveKit room (or a test's sink); this call has neither")
        return None
    await player.start(room=room, agent_session=session)
    return player
