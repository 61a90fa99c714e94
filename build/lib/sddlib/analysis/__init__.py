"""What the runs mean: curves, phases and judgements with intervals over seeds (metrics),
loss landscapes and sharpness (landscape), the linear and random-features theory
(theory) and the network check (network_check). Imports scheduling and below (the
theory only metrics).
"""
