"""mcl.evaluation"""
