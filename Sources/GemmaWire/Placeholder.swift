// GemmaWire
