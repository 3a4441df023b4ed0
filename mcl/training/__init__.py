"""mcl.training"""
