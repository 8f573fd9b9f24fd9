"""aggregate: the stream engine. FlowBatches in, window results (provisional, then final) out."""
