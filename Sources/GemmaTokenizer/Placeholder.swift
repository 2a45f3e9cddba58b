// GemmaTokenizer
