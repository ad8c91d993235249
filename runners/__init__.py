"""Runner profiles: command-line choices turned into Beam PipelineOptions."""
