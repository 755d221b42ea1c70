"""The quantization frontier (issue 21): its make bench rows (rows.py) and the scripts behind bench/quant.md."""
