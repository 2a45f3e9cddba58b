// GemmaMPI
