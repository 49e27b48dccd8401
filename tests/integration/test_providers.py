"""Built-in providers: a spec's options reach the real livekit objects.

Each test writes a spec, loads it with ``load_folder`` (so ``${VAR}`` expansion and
validation are the real ones) and builds it with ``build_models``; assertions read
the livekit objects the plugins' factories constructed. Nothing connects anywhere:
constructing livekit models opens no socket.
"""

from __future__ import annotations

import inspect
import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
from livekit.agents import llm, stt, tts
from livekit.plugins import cartesia, deepgram, openai, silero
from livekit.plugins.openai import tts as openai_tts

from voice_runtime.session.providers import build_models
from voice_runtime.plugins.manager import Plugins, make_plugin_manager
from voice_runtime.spec.loader import LoadedSpec, load_folder

PROVIDER_KEY_VARS = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "DEEPGRAM_API_KEY", "CARTESIA_API_KEY")


@pytest.fixture(autouse=True)
def _no_provider_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keys must come from the spec, not from the developer's shell."""
    for var in PROVIDER_KEY_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.delenv("VOICE_RUNTIME_DISABLE_PLUGINS", raising=False)


def load_spec(tmp_path: Path, body: str) -> tuple[Plugins, LoadedSpec]:
    folder = tmp_path / "agents"
    folder.mkdir(exist_ok=True)
    header = "apiVersion: voice-runtime/v1\nname: probe\ninstructions: Be brief.\n"
    (folder / "probe.yaml").write_text(header + textwrap.dedent(body), encoding="utf-8")
    plugins = make_plugin_manager(None, entry_points=False)
    result = load_folder(folder, plugins)
    assert result.errors == [], [str(e) for e in result.errors]
    assert len(result.specs) == 1
    return plugins, result.specs[0]


def text_pipeline(llm_yaml: str) -> str:
    return f"pipeline:\n  text_only: true\n  llm: {llm_yaml}\n"


def livekit_default(cls: type, param: str) -> Any:
    return inspect.signature(cls.__init__).parameters[param].default


# -- one provider at a time ------------------------------------------------------------


def test_openai_llm_gets_model_sampling_options_endpoint_and_key_from_the_spec(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLM_TEST_KEY", "sk-llm-from-env")
    plugins, loaded = load_spec(
        tmp_path,
        text_pipeline(
            "{provider: openai, model: gpt-4o-mini, temperature: 0.25, top_p: 0.5, max_completion_tokens: 77,"
            ' parallel_tool_calls: false, max_retries: 4, base_url: "http://127.0.0.1:9/llm/v1",'
            ' api_key: "${LLM_TEST_KEY}"}'
        ),
    )

    models = build_models(plugins, loaded, "pipeline")

    assert models.mode == "pipeline"
    assert isinstance(models.llm, openai.LLM)
    assert models.llm.model == "gpt-4o-mini"
    opts = models.llm._opts
    assert (opts.temperature, opts.top_p, opts.max_completion_tokens, opts.parallel_tool_calls) == (0.25, 0.5, 77, False)
    assert str(models.llm._client.base_url) == "http://127.0.0.1:9/llm/v1/"
    assert models.llm._client.api_key == "sk-llm-from-env"
    assert models.llm._client.max_retries == 4


def test_openai_realtime_gets_model_voice_speed_endpoint_key_and_connection_options(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RT_TEST_KEY", "sk-rt-from-env")
    plugins, loaded = load_spec(
        tmp_path,
        """\
        realtime:
          provider: openai
          model: gpt-realtime-mini
          voice: cedar
          speed: 1.25
          modalities: [text]
          max_retry: 5
          retry_interval: 0.75
          connect_timeout: 4
          base_url: "http://127.0.0.1:9/rt/v1"
          api_key: "${RT_TEST_KEY}"
        """,
    )

    models = build_models(plugins, loaded, "realtime")

    assert models.mode == "realtime"
    assert isinstance(models.llm, openai.realtime.RealtimeModel)
    opts = models.llm._opts
    assert (opts.model, opts.voice, opts.speed, opts.modalities) == ("gpt-realtime-mini", "cedar", 1.25, ["text"])
    assert opts.base_url == "http://127.0.0.1:9/rt/v1"
    assert opts.api_key == "sk-rt-from-env"
    conn = opts.conn_options
    assert (conn.max_retry, conn.retry_interval, conn.timeout) == (5, 0.75, 4.0)


def test_openai_realtime_without_connection_options_uses_the_documented_retry_defaults(
    tmp_path: Path,
) -> None:
    plugins, loaded = load_spec(tmp_path, "realtime: {provider: openai, api_key: sk-x}\n")

    model = build_models(plugins, loaded, "realtime").llm

    conn = model._opts.conn_options
    assert (conn.max_retry, conn.retry_interval, conn.timeout) == (3, 2.0, 10.0)
    assert model._opts.modalities == ["text", "audio"]  # livekit's default: audio out


def test_realtime_built_for_text_only_answers_in_text(tmp_path: Path) -> None:
    plugins, loaded = load_spec(tmp_path, "realtime: {provider: openai, api_key: sk-x, modalities: [audio]}\n")

    model = build_models(plugins, loaded, "realtime", text_only=True).llm

    assert model._opts.modalities == ["text"]


def test_realtime_with_a_pipeline_fallback_retries_at_least_once(tmp_path: Path) -> None:
    plugins, loaded = load_spec(
        tmp_path,
        "realtime: {provider: openai, api_key: sk-x, max_retry: 0}\n"
        + text_pipeline("{provider: openai, api_key: sk-x}"),
    )

    model = build_models(plugins, loaded, "realtime").llm

    assert model._opts.conn_options.max_retry == 1


def test_realtime_without_a_fallback_keeps_max_retry_zero(tmp_path: Path) -> None:
    plugins, loaded = load_spec(tmp_path, "realtime: {provider: openai, api_key: sk-x, max_retry: 0}\n")

    model = build_models(plugins, loaded, "realtime").llm

    assert model._opts.conn_options.max_retry == 0


def test_openai_stt_gets_model_language_prompt_endpoint_and_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STT_TEST_KEY", "sk-stt-from-env")
    plugins, loaded = load_spec(
        tmp_path,
        """\
        pipeline:
          llm: {provider: openai, api_key: sk-x}
          stt: {provider: openai, model: gpt-4o-transcribe, language: de, prompt: Ortsnamen in Bayern,
                base_url: "http://127.0.0.1:9/stt/v1", api_key: "${STT_TEST_KEY}"}
          tts: {provider: openai, api_key: sk-x}
        """,
    )

    models = build_models(plugins, loaded, "pipeline")

    assert isinstance(models.stt, openai.STT)
    opts = models.stt._opts
    assert (opts.model, opts.languages, opts.prompt) == ("gpt-4o-transcribe", ["de"], "Ortsnamen in Bayern")
    assert str(models.stt._client.base_url) == "http://127.0.0.1:9/stt/v1/"
    assert models.stt._client.api_key == "sk-stt-from-env"


def test_openai_tts_gets_model_voice_speed_instructions_endpoint_and_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TTS_TEST_KEY", "sk-tts-from-env")
    plugins, loaded = load_spec(
        tmp_path,
        """\
        pipeline:
          llm: {provider: openai, api_key: sk-x}
          stt: {provider: openai, api_key: sk-x}
          tts: {provider: openai, model: tts-1-hd, voice: coral, speed: 1.5, instructions: Speak warmly.,
                base_url: "http://127.0.0.1:9/tts/v1", api_key: "${TTS_TEST_KEY}"}
        """,
    )

    models = build_models(plugins, loaded, "pipeline")

    assert isinstance(models.tts, openai.TTS)
    opts = models.tts._opts
    assert (opts.model, opts.voice, opts.speed, opts.instructions) == ("tts-1-hd", "coral", 1.5, "Speak warmly.")
    assert str(models.tts._client.base_url) == "http://127.0.0.1:9/tts/v1/"
    assert models.tts._client.api_key == "sk-tts-from-env"


def test_deepgram_stt_gets_model_language_tuning_endpoint_and_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DG_TEST_KEY", "dg-from-env")
    plugins, loaded = load_spec(
        tmp_path,
        """\
        pipeline:
          llm: {provider: openai, api_key: sk-x}
          stt:
            provider: deepgram
            model: nova-2
            language: fr
            interim_results: false
            smart_format: true
            punctuate: false
            endpointing_ms: 300
            filler_words: false
            numerals: true
            profanity_filter: true
            base_url: "http://127.0.0.1:9/v1/listen"
            api_key: "${DG_TEST_KEY}"
          tts: {provider: openai, api_key: sk-x}
        """,
    )

    models = build_models(plugins, loaded, "pipeline")

    assert isinstance(models.stt, deepgram.STT)
    opts = models.stt._opts
    assert (opts.model, str(opts.language)) == ("nova-2", "fr")
    assert (opts.interim_results, opts.smart_format, opts.punctuate) == (False, True, False)
    assert (opts.endpointing_ms, opts.filler_words, opts.numerals, opts.profanity_filter) == (300, False, True, True)
    assert opts.endpoint_url == "http://127.0.0.1:9/v1/listen"
    assert models.stt._api_key == "dg-from-env"


def test_deepgram_keyterms_reach_the_stt(tmp_path: Path) -> None:
    plugins, loaded = load_spec(
        tmp_path,
        """\
        pipeline:
          llm: {provider: openai, api_key: sk-x}
          stt: {provider: deepgram, model: nova-3, language: en, keyterms: [LiveKit, Kubernetes], api_key: dg}
          tts: {provider: openai, api_key: sk-x}
        """,
    )

    models = build_models(plugins, loaded, "pipeline")

    assert list(models.stt._opts.keyterm) == ["LiveKit", "Kubernetes"]


def test_cartesia_tts_gets_model_voice_language_speed_endpoint_and_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CARTESIA_TEST_KEY", "cartesia-from-env")
    plugins, loaded = load_spec(
        tmp_path,
        """\
        pipeline:
          llm: {provider: openai, api_key: sk-x}
          stt: {provider: openai, api_key: sk-x}
          tts:
            provider: cartesia
            model: sonic-3
            voice: 794f9389-aac1-45b6-b726-9d9369183238
            language: es
            speed: 1.2
            sample_rate: 16000
            api_version: "2024-11-13"
            base_url: "http://127.0.0.1:9"
            api_key: "${CARTESIA_TEST_KEY}"
        """,
    )

    models = build_models(plugins, loaded, "pipeline")

    assert isinstance(models.tts, cartesia.TTS)
    opts = models.tts._opts
    assert (opts.model, opts.voice, str(opts.language)) == ("sonic-3", "794f9389-aac1-45b6-b726-9d9369183238", "es")
    assert (opts.speed, opts.sample_rate, opts.api_version) == (1.2, 16000, "2024-11-13")
    assert models.tts.sample_rate == 16000
    assert opts.base_url == "http://127.0.0.1:9"
    assert opts.api_key == "cartesia-from-env"


def test_silero_vad_gets_its_thresholds_and_sample_rate(tmp_path: Path) -> None:
    plugins, loaded = load_spec(
        tmp_path,
        """\
        pipeline:
          llm: {provider: openai, api_key: sk-x}
          stt: {provider: deepgram, api_key: dg}
          tts: {provider: openai, api_key: sk-x}
          vad: {provider: silero, min_speech_duration: 0.1, min_silence_duration: 0.3,
                prefix_padding_duration: 0.2, activation_threshold: 0.6, sample_rate: 8000}
        """,
    )

    models = build_models(plugins, loaded, "pipeline")

    assert isinstance(models.vad, silero.VAD)
    opts = models.vad._opts
    assert (opts.min_speech_duration, opts.min_silence_duration, opts.prefix_padding_duration) == (0.1, 0.3, 0.2)
    assert (opts.activation_threshold, opts.sample_rate) == (0.6, 8000)


def test_voice_pipeline_builds_every_stage_and_its_turn_detection(tmp_path: Path) -> None:
    plugins, loaded = load_spec(
        tmp_path,
        """\
        pipeline:
          llm: {provider: openai, model: gpt-4o-mini, api_key: sk-x}
          stt: {provider: deepgram, api_key: dg}
          tts: {provider: cartesia, api_key: ca}
          vad: {provider: silero}
          turn_detection: vad
        """,
    )

    models = build_models(plugins, loaded, "pipeline")

    assert isinstance(models.llm, openai.LLM)
    assert isinstance(models.stt, deepgram.STT)
    assert isinstance(models.tts, cartesia.TTS)
    assert isinstance(models.vad, silero.VAD)
    assert models.turn_detection == "vad"


# -- fallback chains -------------------------------------------------------------------


def test_two_llms_become_a_fallback_adapter_in_spec_order(tmp_path: Path) -> None:
    plugins, loaded = load_spec(
        tmp_path,
        """\
        pipeline:
          text_only: true
          llm:
            - {provider: openai, model: gpt-4.1, base_url: "http://127.0.0.1:9/primary/v1", api_key: sk-a}
            - {provider: openai, model: gpt-4o-mini, base_url: "http://127.0.0.1:9/backup/v1", api_key: sk-b}
        """,
    )

    models = build_models(plugins, loaded, "pipeline")

    assert isinstance(models.llm, llm.FallbackAdapter)
    members = models.llm._llm_instances
    assert [type(m) for m in members] == [openai.LLM, openai.LLM]
    assert [m.model for m in members] == ["gpt-4.1", "gpt-4o-mini"]
    assert [str(m._client.base_url) for m in members] == [
        "http://127.0.0.1:9/primary/v1/",
        "http://127.0.0.1:9/backup/v1/",
    ]
    assert [m._client.api_key for m in members] == ["sk-a", "sk-b"]


def test_two_tts_become_a_fallback_adapter_across_providers(tmp_path: Path) -> None:
    plugins, loaded = load_spec(
        tmp_path,
        """\
        pipeline:
          llm: {provider: openai, api_key: sk-x}
          stt: {provider: deepgram, api_key: dg}
          tts:
            - {provider: cartesia, model: sonic-2, voice: primary-voice, api_key: ca}
            - {provider: openai, voice: coral, api_key: sk-x}
        """,
    )

    models = build_models(plugins, loaded, "pipeline")

    assert isinstance(models.tts, tts.FallbackAdapter)
    first, second = models.tts._tts_instances
    assert isinstance(first, cartesia.TTS) and isinstance(second, openai.TTS)
    assert (first._opts.model, first._opts.voice) == ("sonic-2", "primary-voice")
    assert second._opts.voice == "coral"


def test_two_stt_become_a_fallback_adapter_that_uses_the_spec_vad_for_non_streaming_members(
    tmp_path: Path,
) -> None:
    plugins, loaded = load_spec(
        tmp_path,
        """\
        pipeline:
          llm: {provider: openai, api_key: sk-x}
          stt:
            - {provider: deepgram, model: nova-3, language: en, api_key: dg}
            - {provider: openai, model: whisper-1, language: en, api_key: sk-x}
          tts: {provider: openai, api_key: sk-x}
          vad: {provider: silero, min_silence_duration: 0.4}
        """,
    )

    models = build_models(plugins, loaded, "pipeline")

    assert isinstance(models.stt, stt.FallbackAdapter)
    first, second = models.stt._stt_instances
    assert isinstance(first, deepgram.STT)
    assert first.model == "nova-3"
    # openai's file transcription does not stream: livekit wraps it with the spec's VAD
    assert isinstance(second, stt.StreamAdapter)
    assert isinstance(second.wrapped_stt, openai.STT)
    assert second.wrapped_stt.model == "whisper-1"
    assert second._vad is models.vad
    assert models.vad._opts.min_silence_duration == 0.4


def test_a_one_item_list_builds_the_provider_itself_not_an_adapter(tmp_path: Path) -> None:
    plugins, loaded = load_spec(tmp_path, text_pipeline("[{provider: openai, model: gpt-4o-mini, api_key: sk-x}]"))

    models = build_models(plugins, loaded, "pipeline")

    assert isinstance(models.llm, openai.LLM)
    assert models.llm.model == "gpt-4o-mini"


# -- text only -------------------------------------------------------------------------


def test_text_only_pipeline_builds_only_the_llm(tmp_path: Path) -> None:
    plugins, loaded = load_spec(tmp_path, text_pipeline("{provider: openai, model: gpt-4o-mini, api_key: sk-x}"))

    models = build_models(plugins, loaded, "pipeline")

    assert isinstance(models.llm, openai.LLM)
    assert (models.stt, models.tts, models.vad, models.turn_detection) == (None, None, None, None)


def test_text_only_build_of_a_voice_pipeline_skips_the_audio_stages(tmp_path: Path) -> None:
    plugins, loaded = load_spec(
        tmp_path,
        """\
        pipeline:
          llm: {provider: openai, model: gpt-4o-mini, api_key: sk-x}
          stt: {provider: deepgram, api_key: dg}
          tts: {provider: cartesia, api_key: ca}
          vad: {provider: silero}
        """,
    )

    models = build_models(plugins, loaded, "pipeline", text_only=True)

    assert isinstance(models.llm, openai.LLM)
    assert (models.stt, models.tts, models.vad) == (None, None, None)


# -- unset options are not passed: livekit's defaults apply -----------------------------


def test_openai_tts_voice_and_speed_stay_livekits_defaults_when_the_spec_omits_them(tmp_path: Path) -> None:
    plugins, loaded = load_spec(
        tmp_path,
        """\
        pipeline:
          llm: {provider: openai, api_key: sk-x}
          stt: {provider: deepgram, api_key: dg}
          tts: {provider: openai, api_key: sk-x}
        """,
    )

    opts = build_models(plugins, loaded, "pipeline").tts._opts

    assert opts.voice == openai_tts.DEFAULT_VOICE
    assert opts.speed == livekit_default(openai.TTS, "speed")
    assert opts.instructions is None


def test_openai_llm_sends_no_sampling_options_the_spec_omits(tmp_path: Path) -> None:
    from livekit.agents import NOT_GIVEN

    plugins, loaded = load_spec(tmp_path, text_pipeline("{provider: openai, model: gpt-4o-mini, api_key: sk-x}"))

    opts = build_models(plugins, loaded, "pipeline").llm._opts

    assert opts.temperature is NOT_GIVEN
    assert opts.top_p is NOT_GIVEN
    assert opts.max_completion_tokens is NOT_GIVEN
    assert opts.parallel_tool_calls is NOT_GIVEN


def test_deepgram_tuning_stays_livekits_defaults_when_the_spec_omits_it(tmp_path: Path) -> None:
    plugins, loaded = load_spec(
        tmp_path,
        """\
        pipeline:
          llm: {provider: openai, api_key: sk-x}
          stt: {provider: deepgram, api_key: dg}
          tts: {provider: openai, api_key: sk-x}
        """,
    )

    opts = build_models(plugins, loaded, "pipeline").stt._opts

    for name in ("interim_results", "punctuate", "smart_format", "endpointing_ms", "filler_words"):
        assert getattr(opts, name) == livekit_default(deepgram.STT, name), name
    assert opts.endpoint_url == livekit_default(deepgram.STT, "base_url")


def test_silero_defaults_apply_when_the_spec_sets_nothing(tmp_path: Path) -> None:
    plugins, loaded = load_spec(
        tmp_path,
        """\
        pipeline:
          llm: {provider: openai, api_key: sk-x}
          stt: {provider: deepgram, api_key: dg}
          tts: {provider: openai, api_key: sk-x}
          vad: {provider: silero}
        """,
    )

    opts = build_models(plugins, loaded, "pipeline").vad._opts

    defaults = inspect.signature(silero.VAD.load).parameters
    for name in ("min_speech_duration", "min_silence_duration", "prefix_padding_duration", "activation_threshold"):
        assert getattr(opts, name) == defaults[name].default, name


def test_an_omitted_api_key_falls_back_to_the_providers_environment_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-openai-env")
    monkeypatch.setenv("DEEPGRAM_API_KEY", "dg-from-deepgram-env")
    monkeypatch.setenv("CARTESIA_API_KEY", "ca-from-cartesia-env")
    plugins, loaded = load_spec(
        tmp_path,
        """\
        realtime: {provider: openai}
        pipeline:
          llm: {provider: openai}
          stt: {provider: deepgram}
          tts: {provider: cartesia}
        """,
    )

    pipeline = build_models(plugins, loaded, "pipeline")
    realtime = build_models(plugins, loaded, "realtime")

    assert pipeline.llm._client.api_key == "sk-from-openai-env"
    assert pipeline.stt._api_key == "dg-from-deepgram-env"
    assert pipeline.tts._opts.api_key == "ca-from-cartesia-env"
    assert realtime.llm._opts.api_key == "sk-from-openai-env"


def test_an_omitted_model_runs_the_model_the_spec_reports(tmp_path: Path) -> None:
    plugins, loaded = load_spec(
        tmp_path,
        """\
        pipeline:
          llm: {provider: openai, api_key: sk-x}
          stt: {provider: deepgram, api_key: dg}
          tts: {provider: cartesia, api_key: ca}
        """,
    )
    pipeline: Any = loaded.spec.pipeline

    models = build_models(plugins, loaded, "pipeline")

    assert models.llm.model == pipeline.llm[0].model
    assert models.tts._opts.model == pipeline.tts[0].model


# -- a provider without its key is found before anything starts ---------------------------


def test_check_warns_about_each_provider_without_a_key_naming_spec_provider_and_variable() -> None:
    from helpers import REPO, run_cli

    result = run_cli("check", "agents.d", "--offline", cwd=REPO, env={"VOICE_RUNTIME_DISABLE_PLUGINS": None})
    assert result.rc == 0, result.output  # a warning: check runs in CI, where keys are not set
    warnings = [line for line in result.stdout.splitlines() if line.startswith("warning: support:")]
    assert warnings == [
        "warning: support: pipeline.stt (deepgram) has no API key: set DEEPGRAM_API_KEY or api_key:",
        "warning: support: pipeline.llm[0] (openai) has no API key: set OPENAI_API_KEY or api_key:",
        "warning: support: pipeline.llm[1] (openai) has no API key: set OPENAI_API_KEY or api_key:",
        "warning: support: pipeline.tts[0] (cartesia) has no API key: set CARTESIA_API_KEY or api_key:",
        "warning: support: pipeline.tts[1] (openai) has no API key: set OPENAI_API_KEY or api_key:",
    ]
    assert "warning: concierge: realtime (openai) has no API key: set OPENAI_API_KEY or api_key:" in result.stdout
    keys = {"OPENAI_API_KEY": "sk-1", "DEEPGRAM_API_KEY": "dg-1", "CARTESIA_API_KEY": "ca-1",
            "VOICE_RUNTIME_DISABLE_PLUGINS": None}
    result = run_cli("check", "agents.d", "--offline", "--format", "json", cwd=REPO, env=keys)
    assert result.rc == 0, result.output
    assert json.loads(result.stdout)["warnings"] == []


def test_chat_without_a_provider_key_refuses_at_once_with_the_variable_to_set() -> None:
    from helpers import REPO, assert_wall_within, run_cli_measured

    # chat is text: the LLMs need a key, the audio stages (deepgram, cartesia) do not
    measured = run_cli_measured("chat", "agents.d", "--agent", "support", cwd=REPO,
                                env={"VOICE_RUNTIME_DISABLE_PLUGINS": None})
    result = measured.result
    assert result.rc == 2, result.output
    assert result.stderr.splitlines() == [
        "error: support: pipeline.llm[0] (openai) has no API key: set OPENAI_API_KEY or api_key:",
        "error: support: pipeline.llm[1] (openai) has no API key: set OPENAI_API_KEY or api_key:",
    ]
    assert result.stdout == ""
    # refused before any session starts: about the CLI's own start (`chat --help`, measured
    # here so a loaded machine stretches both), not the 7-11 s the SDK took to say it
    assert_wall_within(measured, run_cli_measured("chat", "--help").wall_s, "the refusal")
    console = run_cli_measured("console", "agents.d", "--agent", "support", "--text", cwd=REPO,
                               env={"VOICE_RUNTIME_DISABLE_PLUGINS": None}).result
    assert (console.rc, console.stderr) == (2, result.stderr)


def test_console_with_piped_input_says_it_needs_a_terminal_and_names_chat_instead_of_ignoring_the_lines() -> None:
    import subprocess

    from helpers import CLI, REPO, child_env

    piped = subprocess.run([*CLI, "console", "agents.d", "--agent", "support", "--text"], input="what time is it\n",
                           capture_output=True, text=True, timeout=60, cwd=REPO,
                           env=child_env({"OPENAI_API_KEY": "sk-test", "VOICE_RUNTIME_DISABLE_PLUGINS": None}))
    assert piped.returncode == 2, piped.stderr[-2000:]
    assert piped.stderr.strip() == ("error: console needs a terminal; for typed turns from a pipe or a script use "
                                    "`voice-runtime chat AGENTS_DIR --agent NAME` (one turn per line)")


def test_a_key_given_in_the_spec_satisfies_the_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from helpers import run_cli

    monkeypatch.setenv("MY_KEY", "sk-from-spec")
    load_spec(tmp_path, text_pipeline("{provider: openai, api_key: '${MY_KEY}'}"))
    result = run_cli("check", "agents", "--offline", cwd=tmp_path)
    assert result.rc == 0 and "has no API key" not in result.output, result.output


def test_a_plugin_provider_names_its_key_variable_and_check_and_chat_use_it(tmp_path: Path) -> None:
    from helpers import run_cli, write

    write(tmp_path / "plugins" / "acme.py", textwrap.dedent("""\
        from pydantic import BaseModel
        import voice_runtime

        class AcmeLLMOptions(BaseModel):
            api_key: str | None = None

        @voice_runtime.hookimpl
        def voice_runtime_register_providers(register):
            register("llm", "acme", AcmeLLMOptions, lambda options: None, api_key_env="ACME_API_KEY")
        """))
    write(tmp_path / "agents" / "probe.yaml", "apiVersion: voice-runtime/v1\ninstructions: Be brief.\n"
          + text_pipeline("{provider: acme}"))
    env = {"ACME_API_KEY": None, "VOICE_RUNTIME_DISABLE_PLUGINS": None}
    checked = run_cli("check", "agents", "--offline", cwd=tmp_path, env=env)
    assert checked.rc == 0, checked.output
    assert "warning: probe: pipeline.llm (acme) has no API key: set ACME_API_KEY or api_key:" in checked.stdout
    chatted = run_cli("chat", "agents", "--agent", "probe", cwd=tmp_path, env=env)
    assert (chatted.rc, chatted.stderr) == (2, "error: probe: pipeline.llm (acme) has no API key: set ACME_API_KEY or api_key:\n")
    checked = run_cli("check", "agents", "--offline", cwd=tmp_path, env={**env, "ACME_API_KEY": "k"})
    assert checked.rc == 0 and "has no API key" not in checked.output, checked.output
