// GemmaModel
