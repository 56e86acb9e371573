"""para.configs"""
