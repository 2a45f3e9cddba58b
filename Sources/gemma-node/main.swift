print("gemma-node")
