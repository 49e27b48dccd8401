"""The OpenAI, Deepgram, Cartesia and Silero providers: plugins registered through the
same hooks as everyone's, each importing its livekit plugin inside its factory."""
