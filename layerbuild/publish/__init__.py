"""Publishing layers to AWS: the pure plan, the boto3 calls, regions and snippets."""
