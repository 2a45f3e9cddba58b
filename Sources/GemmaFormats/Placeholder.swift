// GemmaFormats
