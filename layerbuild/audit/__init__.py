"""What a layer holds and whether it loads on its target: ELF facts, rules, stacks of layers."""
