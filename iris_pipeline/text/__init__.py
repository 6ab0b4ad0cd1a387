"""Text front ends: symbols and phonemes for the TTS and alignment models."""
