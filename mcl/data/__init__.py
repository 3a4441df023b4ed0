"""mcl.data"""
