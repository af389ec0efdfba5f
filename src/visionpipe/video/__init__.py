"""Real-time video: sources, bounded buffers with drop policies, processing, tracking, sinks."""
