"""SafePatching: continual post safety alignment of chat LLMs (Zhao et al., arXiv 2405.13820). README.md is the map."""
