"""mcl.analysis"""
