"""How the agent takes turns (``turn_handling:``) and what the caller hears around
its speech (``background_audio:``), declared in a spec and mapped onto livekit
1.8.9's own options: ``AgentSession(turn_handling=TurnHandlingOptions)`` (not the
deprecated flat keyword arguments) and ``BackgroundAudioPlayer``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

# livekit's BuiltinAudioClip values, by the name a spec uses (the file name without .ogg)
BUILTIN_CLIPS = ("city-ambience", "forest-ambience", "office-ambience", "crowded-room", "keyboard-typing",
                 "keyboard-typing2", "hold-music")
SOUND_SUFFIXES = (".ogg", ".mp3", ".wav", ".flac", ".m4a", ".aac", ".opus")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Endpointing(_Strict):
    mode: Literal["fixed", "dynamic"] | None = Field(
        None, description="fixed: wait min_delay after speech ends. dynamic: learn the caller's pauses.")
    min_delay: float | None = Field(None, ge=0, le=10, description="Seconds of silence before the turn may end.")
    max_delay: float | None = Field(None, gt=0, le=30, description="Seconds after which the turn ends regardless.")

    @model_validator(mode="after")
    def _ordered(self) -> Endpointing:
        if self.min_delay is not None and self.max_delay is not None and self.min_delay > self.max_delay:
            raise PydanticCustomError("endpointing", "min_delay is more than max_delay")
        return self


class Interruption(_Strict):
    enabled: bool | None = Field(None, description="false: the caller cannot talk over the agent.")
    mode: Literal["adaptive", "vad"] | None = Field(
        None, description="adaptive: a model tells barge-in from backchannel (mm-hm). vad: any speech interrupts.")
    min_duration: float | None = Field(None, ge=0, le=5, description="Seconds of speech that interrupt.")
    min_words: int | None = Field(None, ge=0, le=20, description="Words (from the STT) that interrupt.")
    false_interruption_timeout: float | None = Field(
        None, gt=0, le=10, description="Seconds of silence after a barge-in after which it counts as false.")
    resume_false_interruption: bool | None = Field(None, description="Resume the agent's speech after a false one.")


class PreemptiveGeneration(_Strict):
    enabled: bool = Field(True, description="Start the reply before the turn is confirmed over.")
    preemptive_tts: bool | None = Field(None, description="Also start the speech (not only the LLM).")
    max_speech_duration: float | None = Field(None, gt=0, le=120, description="Longer turns are not pre-answered.")


class TurnHandling(_Strict):
    """livekit's TurnHandlingOptions. Unset keys keep livekit's defaults."""

    endpointing: Endpointing | None = None
    interruption: Interruption | None = None
    preemptive_generation: bool | PreemptiveGeneration | None = Field(
        None, description="true/false, or {enabled, preemptive_tts, max_speech_duration}.")

    def options(self) -> dict[str, Any]:
        """The given keys as livekit's TurnHandlingOptions dict."""
        out: dict[str, Any] = {}
        for key in ("endpointing", "interruption"):
            block = getattr(self, key)
            if block is not None and (given := block.model_dump(exclude_none=True)):
                out[key] = given
        pre = self.preemptive_generation
        if isinstance(pre, bool):
            out["preemptive_generation"] = {"enabled": pre}
        elif pre is not None:
            out["preemptive_generation"] = pre.model_dump(exclude_none=True)
        return out


class Sound(_Strict):
    """A built-in clip of livekit's or a sound file (relative to the spec)."""

    clip: Literal[BUILTIN_CLIPS] | None = Field(None, description="One of livekit's built-in clips.")  # type: ignore[valid-type]
    file: str | None = Field(None, min_length=1, max_length=1024, description="A sound file, relative to the spec.")
    volume: float = Field(1.0, ge=0, le=1, description="0 to 1.")

    @model_validator(mode="after")
    def _one_source(self) -> Sound:
        if (self.clip is None) == (self.file is None):
            raise PydanticCustomError("sound", "give `clip` or `file`, one of them")
        if self.file is not None and not self.file.lower().endswith(SOUND_SUFFIXES):
            raise PydanticCustomError("sound", "`file` must be a sound file ({kinds})",
                                      {"kinds": ", ".join(SOUND_SUFFIXES)})
        return self


class BackgroundAudio(_Strict):
    ambient: Sound | None = Field(None, description="Played for the whole call, under the agent's voice.")
    thinking: Sound | None = Field(None, description="Played while the agent thinks (between turn end and speech, "
                                   "and while a tool runs).")


def sound_file_problems(background: BackgroundAudio | None, folder: Path) -> list[tuple[tuple[str, ...], str]]:
    """Each sound ``file`` that is not a readable regular file, as (key path, message)."""
    out: list[tuple[tuple[str, ...], str]] = []
    for key in ("ambient", "thinking"):
        sound = getattr(background, key, None) if background is not None else None
        if sound is None or sound.file is None:
            continue
        target = (folder / sound.file).resolve()
        if not target.is_file():
            out.append((("background_audio", key, "file"), f"{target}: no such sound file"))
    return out
