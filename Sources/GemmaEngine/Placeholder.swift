// GemmaEngine
