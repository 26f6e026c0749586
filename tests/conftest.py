import os

# Tests never reach a model hub; engines and tokenizers load only local files.
os.environ["HF_HUB_OFFLINE"] = "1"
