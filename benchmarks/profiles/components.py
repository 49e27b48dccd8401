"""A job process's Python time by component, from a py-spy raw profile of GIL-holding
samples (the tables in this folder):

    py-spy record --pid JOB --gil --threads --rate 200 --format raw -o job.raw --duration 40
    python benchmarks/profiles/components.py job.raw [-v]

Each stack goes to the first component (in RULES order) one of its frames names."""
import re, sys, collections
RULES = [  # (component, substrings any of which in a frame), tried in this order
    ("loop monitor (livekit telemetry)", ["loop_monitor.py"]),
    ("log forwarding to the parent (livekit log_queue)", ["log_queue.py"]),
    ("VAD (silero stream + ONNX call + executor hop)", ["silero/vad.py", "onnx_model.py"]),
    ("VAD events -> turn handling (audio_recognition/agent_activity)", ["_on_vad_event", "on_vad_inference_done", "_vad_task"]),
    ("STT websocket (deepgram send/recv)", ["deepgram/stt.py"]),
    ("STT events (audio_recognition)", ["audio_recognition.py"]),
    ("TTS (cartesia stream receive/decode)", ["cartesia/tts.py", "agents/tts/", "audio_decoder"]),
    ("LLM (openai stream)", ["openai/", "agents/llm/llm.py", "inference/llm.py", "llm/chat_context", "llm/utils"]),
    ("MCP tool call (gateway/toolset/mcp client)", ["voice_runtime/mcp/", "/mcp/client", "mcp/shared", "agents/llm/mcp.py", "tool_executor.py", "function_tool"]),
    ("audio output (speaker pacing, forwarding, send to page)", ["capture_frame", "BrowserSpeaker", "SpeakerAudio", "_play_out", "voice/io.py", "generation.py", "transcription/", "BrowserLink.send", "keep_played"]),
    ("audio input", []),  # matched in classify(), after the rest
]

def frames_of(line):
    m = re.match(r"(.*) (\d+)$", line.rstrip("\n"))
    if not m: return None, 0
    return m.group(1).split(";"), int(m.group(2))

def classify(frames):
    text = frames
    for comp, keys in RULES[:-1]:
        if any(k in f for f in text for k in keys):
            return comp
    if any(k in f for f in text for k in ["read_frame", "BrowserMic", "talk_job.py", "_forward_audio", "push_audio", "readexactly", "StreamReader"]):
        return "audio input (unix socket read, mic queue, frame -> session)"
    if any("voice_runtime/" in f for f in text):
        return "our code (other: report, claims, checkpoints, status, listeners)"
    if any("agent_activity.py" in f or "agent_session.py" in f or "speech_handle" in f for f in text):
        return "livekit session bookkeeping (agent_activity/session)"
    if any(k in f for f in text for k in ["selector_events.py", "selectors.py", "base_events.py", "events.py", "threading.py", "concurrent/futures", "queue.py"]):
        return "event loop / thread overhead (select, callbacks, executor)"
    return "other: " + text[-1]

if __name__ == "__main__":
    c = collections.Counter(); other = collections.Counter(); tot = 0
    for line in open(sys.argv[1]):
        frames, n = frames_of(line)
        if not frames: continue
        tot += n
        k = classify(frames)
        c[k] += n
        if k.startswith("other") or k.startswith("event loop"):
            other[frames[-1]] += n
    print("samples", tot)
    for k, v in c.most_common(): print(f"{100*v/tot:5.1f}%  {k}")
    if "-v" in sys.argv:
        print("--- leaves of event-loop/other")
        for k, v in other.most_common(25): print(f"{100*v/tot:5.1f}%  {k}")
