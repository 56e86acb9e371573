"""para.daemon"""
